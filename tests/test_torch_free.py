"""Predictions without torch (issue 28, item 1): with the runtime's graph set cached, ``medmm predict`` (single and
``--manifest``) imports no torch, timm, transformers or onnx, and answers what the torch path answers to 1e-6
(probabilities, calls, warnings, drafts); the cache is built by ``medmm warmup`` or by the first run, both at once
into one folder; a folder that cannot be written falls back to torch with one line that says so.

Costs one warm-up of a fresh cache folder (~20 s) and one torch pipeline; everything else reuses them.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medmm import runtime as rt

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
TOL = 1e-6
HEAVY = ("torch", "torchvision", "timm", "transformers", "onnx")
VOLATILE = {"energy", "latency_s", "stage_latency_s"}   # measured per run, not answers

# the CLI in a fresh interpreter: each argv in turn (one JSON line each: exit code, what it printed), then which of
# the heavy packages got imported
CLI = r"""
import contextlib, io, json, sys
from medmm.__main__ import main
for argv in json.loads(sys.argv[1]):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    print(json.dumps({"exit": code, "stdout": printed.getvalue()}))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[2]))))
"""


def _requests(tmp: Path) -> tuple[list[tuple[list[str], str | None]], Path]:
    """(the single requests as (images, notes), a manifest of two more rows)."""
    notes = {n: (EXAMPLES / f"{n}.txt").read_text(encoding="utf-8") for n in ("02_child_bacterial_pneumonia",
                                                                              "03_adult_covid19", "05_notes_only")}
    single = [([str(EXAMPLES / "04_adult_dicom_dx.dcm")], None),
              ([str(EXAMPLES / "02_child_bacterial_pneumonia.jpeg")], notes["02_child_bacterial_pneumonia"]),
              ([], notes["05_notes_only"])]
    manifest = tmp / "rows.csv"
    with manifest.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "notes"])
        w.writerow([str(EXAMPLES / "01_child_normal.jpeg"), ""])
        w.writerow([str(EXAMPLES / "03_adult_covid19.jpg"), notes["03_adult_covid19"]])
    return single, manifest


def _argv(images: list[str], notes: str | None) -> list[str]:
    return ["predict", *images, *(["--notes", notes] if notes else []), "--json"]


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != rt.ENV_VAR}    # these tests are about `auto`
    return {**env, rt.CACHE_ENV: str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A fresh cache folder warmed by ``medmm warmup`` and, at the same time, by a cold ``medmm predict`` (the first
    run builds it too): both must succeed into the one folder. Returns (folder, the cold run's JSON)."""
    if not rt.installed("openvino") and not rt.installed("onnxruntime"):
        pytest.skip("no ONNX runtime installed")
    cache = tmp_path_factory.mktemp("graph-cache")
    cold_argv = _argv([str(EXAMPLES / "04_adult_dicom_dx.dcm")], None)
    procs = [subprocess.Popen([sys.executable, "-m", "medmm", *argv], cwd=ROOT, env=_env(cache), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for argv in (["warmup"], cold_argv)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert outs[0][0].startswith("warmup: ") and str(cache) in outs[0][0]
    assert len(list(cache.glob("graphs_*.json"))) == 1 and not list(cache.glob("*.tmp"))
    return cache, json.loads(outs[1][0])


@pytest.fixture(scope="module")
def torch_path(warm):
    """The torch path: the same runtime's encoders, every other stage in the torch model (``graphs=False``)."""
    from medmm.pipeline import Pipeline

    mp = pytest.MonkeyPatch()
    mp.setenv(rt.CACHE_ENV, str(warm[0]))
    try:
        yield Pipeline.from_checkpoint(device="cpu", graphs=False)
    finally:
        mp.undo()


def _close(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ (floats by more than TOL), ignoring the measured, volatile keys."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) - VOLATILE != set(b) - VOLATILE:
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a if k not in VOLATILE for d in _close(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, (int, float)):
        return [] if abs(a - b) <= TOL else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def test_predict_runs_without_torch_and_answers_as_the_torch_path(warm, torch_path, tmp_path):
    from medmm.service import run_request

    single, manifest = _requests(tmp_path)
    out_csv = tmp_path / "out.csv"
    argvs = [_argv(images, notes) for images, notes in single]
    argvs.append(["predict", "--manifest", str(manifest), "--out", str(out_csv)])
    proc = subprocess.run([sys.executable, "-c", CLI, json.dumps(argvs), json.dumps(HEAVY)], cwd=ROOT,
                          env=_env(warm[0]), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *calls, modules = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert modules == []                                        # no torch, timm, transformers, onnx
    assert [c["exit"] for c in calls] == [0] * len(argvs)
    payloads = [json.loads(c["stdout"]) for c in calls[:len(single)]]
    for (images, notes), got in zip(single, payloads):
        want = run_request(torch_path, images, notes).to_json()
        assert _close(got, want) == [], images or "notes only"
        assert got["report"] == want["report"] and got["warnings"] == want["warnings"]
    assert _close(payloads[0], warm[1]) == []                   # the cold first run answered the same
    from medmm.report import consistency_warnings

    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    for row in rows:
        path = Path(row["image"])
        notes = next(r for r in csv.DictReader(manifest.open(encoding="utf-8")) if r["image"] == row["image"])["notes"]
        pred = torch_path.predict([path], notes or None)
        assert row["status"] == pred.status and row["positive"] == ";".join(pred.positive)
        assert max(abs(float(row[f]) - p) for f, p in pred.findings.items()) <= TOL
        warnings = dict.fromkeys([*pred.warnings, *consistency_warnings(pred)])
        assert row["warnings"] == " | ".join(" ".join(w.split()) for w in warnings if w)


def test_numpy_model_input_matches_torch():
    """The torch-free preprocessing (``medmm.models.preprocess``) is torch's antialiased resize to float rounding."""
    import torch  # noqa: F401 - the reference

    from medmm.config import Preprocessing
    from medmm.io import load_scan
    from medmm.models.preprocess import to_model_array
    from medmm.models.transforms import to_model_input

    prep = Preprocessing()
    rng = np.random.default_rng(0)
    films = [load_scan(EXAMPLES / n).pixels for n in ("01_child_normal.jpeg", "04_adult_dicom_dx.dcm")]
    for pixels in films + [rng.random(s, dtype=np.float32) for s in ((300, 260), (1500, 1024), (100, 150), (224, 224))]:
        got, want = to_model_array(pixels, prep), to_model_input(pixels, prep).numpy()
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() <= TOL


def test_tokens_match_transformers():
    """``tokenizers`` over the text encoder's tokenizer.json gives transformers' ids, truncation and padding."""
    from medmm.config import ModelConfig
    from medmm.models import TextEncoder
    from medmm.runtime.tokens import NotesTokenizer

    cfg = ModelConfig()
    ref = TextEncoder(cfg.text_encoder, cfg.text_max_tokens)
    ours = NotesTokenizer.for_text_encoder(cfg.text_encoder, cfg.text_max_tokens)
    texts = [(EXAMPLES / n).read_text(encoding="utf-8") for n in ("02_child_bacterial_pneumonia.txt",
                                                                   "05_notes_only.txt")]
    texts += ["", "Café naïve — 38.5°C, SpO2 93%; r/o PNA?", "fever " * 400]
    for batch in [[t] for t in texts] + [texts]:
        want = ref.tokenize(batch)
        ids, mask = ours(batch)
        assert np.array_equal(ids, want["input_ids"].numpy()) and np.array_equal(mask, want["attention_mask"].numpy())


def test_an_unwritable_cache_falls_back_to_torch_with_one_line(tmp_path, monkeypatch, caplog, capsys):
    """A cache folder that cannot be created (here: under a file) -> the pipeline runs in torch, saying why in one
    line; ``medmm warmup`` refuses with exit 2 and that line."""
    from medmm.__main__ import main
    from medmm.pipeline import Pipeline

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.delenv(rt.ENV_VAR, raising=False)
    monkeypatch.setenv(rt.CACHE_ENV, str(blocker / "cache"))
    assert main(["warmup"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not writable" in err and str(blocker / "cache") in err
    with caplog.at_level(logging.WARNING, logger="medmm.pipeline"):
        pipe = Pipeline.from_checkpoint(device="cpu")
    assert pipe.runtime_name == "torch" and pipe.graphs is None
    lines = [r.getMessage() for r in caplog.records if "not writable" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "torch" in lines[0]
    assert pipe.predict([EXAMPLES / "01_child_normal.jpeg"]).status == "ok"


def test_the_graph_set_index_is_keyed_and_complete(warm, tmp_path):
    """The index names every graph of the set; an index whose graphs are missing is no index (rebuilt)."""
    from medmm.gate import load_gate
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT, read_meta
    from medmm.runtime.cache import GraphSet
    from medmm.runtime.graphs import graph_set_key, open_graphs

    meta, gate = read_meta(DEFAULT_CHECKPOINT), load_gate(DEFAULT_CHECKPOINT)
    found = GraphSet.load(warm[0], graph_set_key(meta, gate))
    assert found is not None and set(found.files) == {"image", "gate", "head", "text"}
    assert found.weights_sha256 == meta.weights_sha256
    copy = tmp_path / "partial"
    copy.mkdir()
    (copy / GraphSet.index_path(copy, found.key).name).write_text(
        GraphSet.index_path(warm[0], found.key).read_text())
    assert GraphSet.load(copy, found.key) is None                      # its graph files are not there
    assert open_graphs(meta, rt.resolve(None, export=False), "cpu", gate, folder=copy) is None
