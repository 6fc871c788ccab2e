"""The Ray path on a local cluster (issue 27): ``medmm serve``'s application and ``predict --engine ray``.

Skipped when Ray is not installed (an optional extra, ``pip install ".[ray]"``; ``make test`` installs it, see
docs/scale.md). One local cluster for the module: the Ray Data tests run first (the single-process CSV exactly; a
run interrupted with Ctrl-C resumed per block to the same bytes), then one Serve application (one model replica)
answers ``/predict_json`` through gradio_client. The load part (2 replicas, cross-talk under 16 users, a replica
killed under load, p95) and the 2,000-film equality check are a benchmark, ``scripts/scale_test.py``, not a test.
"""

from __future__ import annotations

import concurrent.futures
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medmm.training.data import SHARED_DATA
from tests.helpers import ROOT

ray = pytest.importorskip("ray", reason="ray is not installed (optional extra): pip install \".[ray]\"")
pytest.importorskip("ray.serve", reason="ray[serve] is not installed: pip install \".[ray]\"")

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "assets" / "examples"
IMAGE = EXAMPLES / "02_child_bacterial_pneumonia.jpeg"
NOTES = "Child, 4 years. Fever, productive cough."
SHARED = SHARED_DATA / "kermany224" / "train"
PORT = 8765


@pytest.fixture(scope="module", autouse=True)
def cluster():
    # the replicas' numbers compare with the torch reference; set for this module only (Ray's workers inherit it) and
    # restored after, or later tests of `auto` (test_torch_free) would run under torch
    before = os.environ.get("MEDMM_RUNTIME")
    os.environ.setdefault("MEDMM_RUNTIME", "torch")
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        if before is None:
            os.environ.pop("MEDMM_RUNTIME", None)
        else:
            os.environ["MEDMM_RUNTIME"] = before


def _films(n: int) -> list[Path]:
    found = sorted(SHARED.glob("*/*.jpeg"))[:n] if SHARED.is_dir() else []
    return found or sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".jpeg", ".jpg", ".dcm"))


def _manifest(path: Path) -> Path:
    rows = [{"image": str(p), "notes": ""} for p in _films(12)]
    rows += [{"image": "missing.png", "notes": "cough"}, {"image": "", "notes": "Fever and cough, 3 days."},
             {"image": "", "notes": ""}, {"image": str(EXAMPLES / "README.md"), "notes": "x"},
             {"image": str(IMAGE), "notes": "Line one,\n\"quoted\" line two"}]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "notes"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> tuple[Path, Path]:
    """The manifest and what ``predict --manifest`` (one process) writes for it."""
    tmp = tmp_path_factory.mktemp("manifest")
    manifest = _manifest(tmp / "manifest.csv")
    local = tmp / "local.csv"
    # the machine's default thread count: predict --manifest pins its own (as each actor does), or the 6th decimal
    # would differ between the engines
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cli = subprocess.run([sys.executable, "-m", "medmm", "predict", "--manifest", str(manifest), "--out", str(local),
                          "--runtime", "torch"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert cli.returncode == 0, cli.stderr[-2000:]
    return manifest, local


def test_ray_data_writes_the_single_process_csv_exactly(scored: tuple[Path, Path], tmp_path: Path) -> None:
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.scale.batch import run_manifest

    manifest, local = scored
    summary = run_manifest(manifest, tmp_path / "ray.csv", str(DEFAULT_CHECKPOINT), "torch", workers=2, block_rows=4)
    assert summary["rows"] == summary["scored_rows"] == len(list(csv.DictReader(manifest.open(encoding="utf-8"))))
    assert (tmp_path / "ray.csv").read_bytes() == local.read_bytes()     # columns, numbers, warnings, errors
    # parts left by a run of another manifest or checkpoint (another key) and a torn temp file are deleted, not used
    parts = tmp_path / "ray.parquet.parts"
    parts.mkdir()
    (parts / "0123456789abcdef-000000.csv").write_text("stale,row\r\n")
    (parts / ".0123456789abcdef-000001.csv.99.tmp").write_text("torn")
    summary = run_manifest(manifest, tmp_path / "ray.parquet", str(DEFAULT_CHECKPOINT), "torch", workers=1)
    assert summary["resumed_rows"] == 0 and not parts.exists()
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "ray.parquet").to_pylist() == list(csv.DictReader(local.open(encoding="utf-8")))


def test_ray_data_resumes_an_interrupted_run_per_block(scored: tuple[Path, Path], tmp_path: Path) -> None:
    """Ctrl-C part-way through ``predict --engine ray`` keeps the finished blocks; the same command then scores only
    the rest and writes the file an uninterrupted run writes, byte for byte, and removes the parts."""
    import signal
    import time

    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.scale.batch import run_manifest

    manifest, local = scored
    out, parts = tmp_path / "ray.csv", tmp_path / "ray.csv.parts"
    command = [sys.executable, "-m", "medmm", "predict", "--manifest", str(manifest), "--out", str(out), "--runtime",
               "torch", "--engine", "ray", "--workers", "1", "--block-rows", "2"]
    # a driver of its own on this module's cluster (RAY_ADDRESS), so no second cluster starts
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any(parts.glob("*.csv")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    kept = sorted(parts.glob("*.csv"))
    with manifest.open(newline="", encoding="utf-8") as f:
        rows = sum(1 for _ in csv.DictReader(f))    # 17 with ../shared, 9 without (the shipped examples)
    blocks = -(-rows // 2)                          # --block-rows 2
    assert err.strip().splitlines()[-1] == (f"interrupted: {len(kept)} of {blocks} blocks are in {parts}; "
                                            f"run the same command again to resume")
    assert not out.exists() and 1 <= len(kept) < blocks
    kept_rows = sum(len(list(csv.reader(p.open(newline="", encoding="utf-8")))) for p in kept)
    summary = run_manifest(manifest, out, str(DEFAULT_CHECKPOINT), "torch", workers=1, block_rows=2)
    assert summary["resumed_rows"] == kept_rows > 0
    assert summary["resumed_rows"] + summary["scored_rows"] == summary["rows"] == rows
    assert out.read_bytes() == local.read_bytes() and not parts.exists()


def test_engine_ray_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,label\n1,0\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "medmm", "predict", "--manifest", str(bad), "--out",
                          str(tmp_path / "o.csv"), "--engine", "ray"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == "error: manifest bad.csv needs an 'image' and/or 'notes' column"


@pytest.fixture(scope="module")
def url():
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.scale.serve import ServeOptions, start

    yield start(ServeOptions(checkpoint=str(DEFAULT_CHECKPOINT), replicas=1, port=PORT, runtime="torch"),
                blocking=False)


@pytest.fixture(scope="module")
def reference() -> dict:
    """What ``python app.py``'s ``/predict_json`` returns for IMAGE + NOTES: ``run_request(...).to_json()`` on a
    torch pipeline in this process (tests/test_api.py checks the app returns that object)."""
    import torch

    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.pipeline import Pipeline
    from medmm.service import run_request

    torch.set_num_threads(1)
    pipe = Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, runtime="torch")
    return run_request(pipe, [IMAGE], NOTES).to_json()


def test_serve_predict_json_is_the_single_process_object(url: str, reference: dict) -> None:
    from gradio_client import Client, handle_file

    got = Client(url, verbose=False).predict(files=[handle_file(str(IMAGE))], notes=NOTES, api_name="/predict_json")
    assert list(got) == list(reference)
    assert got["findings"] == pytest.approx(reference["findings"], abs=1e-6)
    for key in ("status", "thresholds", "positive", "calls", "population", "modalities", "report", "warnings",
                "scans", "checkpoint", "disclaimer", "notes_evidence"):
        if key in reference:
            assert got[key] == reference[key], key
    assert got["energy"]["joules"] > 0 and got["latency_s"] > 0


def test_serve_bad_input_gets_the_same_one_line_errors(url: str, tmp_path: Path) -> None:
    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from medmm.serve import server

    client = Client(url, verbose=False)
    fake = tmp_path / "scan.png"
    fake.write_text("this is not an image\n" * 20)
    with pytest.raises(AppError) as info:
        client.predict(files=[handle_file(str(fake))], notes="", api_name="/predict_json")
    assert str(info.value) == "not an image: the file is text (expected DICOM, PNG or JPEG)"
    with pytest.raises(AppError) as info:
        client.predict(files=[], notes="   ", api_name="/predict_json")
    assert str(info.value) == "Provide at least one scan or some clinical notes."
    # an oversized upload is refused by the ingress (python app.py's limits), before any replica sees it
    big = httpx.post(url + "gradio_api/upload", files=[("files", ("big.dcm", b"0" * (server.MAX_UPLOAD_BYTES + 10),
                                                                   "x"))], timeout=60)
    assert big.status_code == 413 and "MB" in big.text
    assert client.predict(files=[], notes="cough", api_name="/predict_json")["modalities"] == ["notes"]


def test_serve_batching_gives_each_caller_its_own_answer(url: str) -> None:
    """Concurrent requests on one replica share encoder forwards (@serve.batch); each answer equals the one the
    same request gets alone, to 1e-6."""
    from ray import serve

    handle = serve.get_deployment_handle("MedmmModel", app_name="medmm")
    films = _films(4)
    blobs = [[p.read_bytes()] for p in films]
    alone = [handle.run.remote(b, None, {"report": False}).result().prediction.findings for b in blobs]
    before = handle.stats.remote().result()
    with concurrent.futures.ThreadPoolExecutor(len(blobs)) as pool:
        together = list(pool.map(lambda b: handle.run.remote(b, None, {"report": False}).result(), blobs * 2))
    after = handle.stats.remote().result()
    for i, result in enumerate(together):
        assert result.prediction.findings == pytest.approx(alone[i % len(blobs)], abs=1e-6)
    assert after["calls"] - before["calls"] == len(together)
    assert after["batches"] - before["batches"] <= len(together)


def test_serve_config_file_builds_the_same_application() -> None:
    """``deploy/rayservice.yaml``'s import path and args (strings, as a Serve config gives them)."""
    import yaml

    import serve_app

    config = yaml.safe_load(yaml.safe_load((ROOT / "deploy" / "rayservice.yaml").read_text())["spec"]["serveConfigV2"])
    app = config["applications"][0]
    assert app["import_path"] == "serve_app:build_app_from_config"
    args = {k: str(v) for k, v in app["args"].items()} | {"checkpoint": str(ROOT / "checkpoints" / "default")}
    assert serve_app.build_app_from_config(args) is not None
    with pytest.raises(ValueError, match="unknown medmm serve options: replica"):
        serve_app.build_app_from_config({"checkpoint": "c", "replica": "2"})
