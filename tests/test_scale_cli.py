"""The Ray commands' options (``medmm serve``, ``predict --engine ray``): refused with one line before Ray or the
model load, with or without Ray installed (the Ray paths themselves: tests/test_ray.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medmm", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (("serve", "--replicas", "2", "--max-replicas", "3"), "give --replicas or --min-replicas/--max-replicas, not both"),
    (("serve", "--min-replicas", "3", "--max-replicas", "2"), "--min-replicas must be at least 1 and at most --max-replicas"),
    (("serve", "--batch-wait-ms", "-1"), "--batch-wait-ms must be 0 or more"),
    (("predict", "--notes", "cough", "--engine", "ray"), "--engine ray scores a --manifest"),
    (("predict", "--notes", "cough", "--workers", "2"), "--workers needs --engine ray"),
    (("predict", "--notes", "cough", "--block-rows", "8"), "--block-rows needs --engine ray"),
])
def test_bad_scale_options_are_one_line(args: tuple[str, ...], message: str) -> None:
    out = _cli(*args)
    assert out.returncode == 2 and out.stderr.strip() == f"error: {message}", out.stderr[-1000:]


def test_zero_replicas_or_workers_are_refused_by_the_parser() -> None:
    for args in (("serve", "--replicas", "0"), ("predict", "--workers", "0", "--notes", "x")):
        out = _cli(*args)
        assert out.returncode == 2 and "must be at least 1" in out.stderr


def test_serve_options_map_onto_the_deployment() -> None:
    from medmm.scale.serve import ServeOptions

    fixed = ServeOptions(checkpoint="c", replicas=3, max_ongoing=6).deployment_options()
    assert fixed["num_replicas"] == 3 and fixed["max_ongoing_requests"] == 6 and "autoscaling_config" not in fixed
    scaled = ServeOptions(checkpoint="c", min_replicas=1, max_replicas=4).deployment_options()
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2.0}
    assert "num_replicas" not in scaled


def test_blocks_hold_the_rows_the_single_process_reader_sees(tmp_path) -> None:
    """``--engine ray`` cuts the manifest into blocks by offset; reading each block back gives exactly the rows
    ``csv.DictReader`` gives ``--engine local`` (quoted multi-line notes, blank lines, short and long rows, UTF-8)."""
    import csv

    from medmm.scale.batch import plan_blocks, read_block

    manifest = tmp_path / "m.csv"
    manifest.write_text('image,notes\r\na.png,"two\nlines, ""quoted"""\r\n\r\nb.png\r\nc.png,x,extra\n'
                        + "".join(f"f{i}.png,fièvre {i}\n" for i in range(7)), encoding="utf-8")
    expected = list(csv.DictReader(manifest.open(newline="", encoding="utf-8")))
    for block_rows in (1, 3, 4, 100):
        plan = plan_blocks(manifest, block_rows)
        assert plan.rows == len(expected) == 10 and plan.header == ["image", "notes"]
        got = [row for b in plan.blocks for row in read_block(manifest, plan.header, b.offset, b.rows)]
        assert got == expected and [b.rows for b in plan.blocks][:-1] == [block_rows] * (len(plan.blocks) - 1)


def test_a_run_key_changes_with_the_manifest_checkpoint_runtime_and_block_size(tmp_path) -> None:
    import shutil

    from medmm.config import META_FILE
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.scale.batch import run_key

    manifest = tmp_path / "m.csv"
    manifest.write_text("image\na.png\n", encoding="utf-8")
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_CHECKPOINT, checkpoint, ignore=shutil.ignore_patterns("*.safetensors"))
    key = run_key(manifest, str(checkpoint), "torch", 128)
    assert key == run_key(manifest, str(checkpoint), "torch", 128)
    assert key != run_key(manifest, str(checkpoint), "onnxruntime", 128) != run_key(manifest, str(checkpoint), "torch", 64)
    manifest.write_text("image\nb.png\n", encoding="utf-8")
    changed_manifest = run_key(manifest, str(checkpoint), "torch", 128)
    meta = checkpoint / META_FILE      # another checkpoint: its weights' sha256 is in here
    meta.write_text(meta.read_text().replace('"weights_sha256": "', '"weights_sha256": "0'))
    assert len({key, changed_manifest, run_key(manifest, str(checkpoint), "torch", 128)}) == 3
