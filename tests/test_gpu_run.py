"""scripts/gpu_run.py (issue 28, item 4): the GPU run's CPU smoke test (every stage, tiny settings) and the driver's
bookkeeping when a stage is stopped at the budget."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "scripts" / "gpu_run.py")
gpu_run = sys.modules["gpu_run"] = importlib.util.module_from_spec(_spec)  # dataclasses look the module up
_spec.loader.exec_module(gpu_run)


@pytest.mark.slow
def test_smoke_run_writes_every_figure(tmp_path):
    from medmm.labels import FINDINGS
    from medmm.training.data import SHARED_DATA

    out = tmp_path / "run"
    env = {**os.environ, "MEDMM_PYTHON": sys.executable, "MEDMM_CACHE_DIR": str(tmp_path / "onnx")}
    r = subprocess.run(["bash", "scripts/gpu_run.sh", "--smoke", "--budget-s", "900", "--out", str(out)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "every stage ran or was skipped with a reason" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == gpu_run.SCHEMA and summary["smoke"] and summary["budget_s"] == 900 and summary["ok"]
    assert list(summary["stages"]) == ["machine", "bench", "precision", "train"]

    machine = json.loads((out / "machine.json").read_text())
    assert {"torch", "cuda_available", "gpus", "nvidia_smi", "packages", "git", "cpus_usable"} <= set(machine)
    bench = json.loads((out / "bench.json").read_text())
    assert bench["schema"] == "medmm-bench/1" and bench["stages"]["image_encoder"]["p50_ms"] > 0
    precision = json.loads((out / "precision.json").read_text())
    for name in ("fp32", "fp16", "bf16"):
        assert precision["image_encoder"][name]["batch_1"]["p50_ms"] > 0 and precision["request"][name]["p50_ms"] > 0
    assert set(precision["max_abs_dp_vs_fp32"]) == {"fp16", "bf16"}
    assert precision["accelerators"]["tensorrt"]["status"] in ("ok", "skipped", "failed")
    assert precision["accelerators"]["openvino_gpu"]["reason" if not machine["cuda_available"] else "status"]

    if not SHARED_DATA.is_dir():
        assert summary["stages"]["train"]["status"] == "skipped"
        return
    plan = json.loads((out / "plan.json").read_text())
    assert plan["chosen"]["input_size"] == 64 and plan["chosen"]["verdict"] == "chosen" and plan["missing_options"]
    train = json.loads((out / "train.json").read_text())
    assert train["status"] == "ok" and len(train["finished"]["cv_folds"]) == 2 and train["finished"]["final_fit"]
    assert sorted(train["finished"]["leave_one_source_out"]) == ["covid", "kermany", "nih"]
    assert set(train["oof_auc"]) == set(FINDINGS) and set(train["loso_auc"]) == {"covid", "kermany", "nih"}
    meta = json.loads((out / "train" / "checkpoint" / "medmm.json").read_text())
    assert meta["preprocessing"]["input_size"] == 64  # the input size the training CLI has no option for
    assert meta["training"]["config"]["finetune_blocks"] == plan["chosen"]["finetune_blocks"]
    assert (out / "train" / "metrics.json").is_file() and not (out / "train" / "cache").exists()


def _stopped_run(tmp_path: Path, with_metrics: bool) -> tuple[Path, dict]:
    train = tmp_path / "train"
    (train / "folds").mkdir(parents=True)
    (train / "cache").mkdir()
    with zipfile.ZipFile(train / "folds" / "fold0.npz", "w") as z:
        z.writestr("val_idx.npy", b"x")
    (train / "folds" / "fold1.npz").write_bytes(b"PK\x03\x04 cut mid-write")
    (train / "cache" / "stem_abc.pt").write_bytes(b"cut")
    if with_metrics:
        (train / "metrics.json").write_text(json.dumps({
            "metrics": {"findings": {"Pneumonia": {"auc": {"value": 0.9}}}},
            "training": {"config": {"loso": True}, "duration_s": 100.0}}))
    plan = {"chosen": {"input_size": 384, "finetune_blocks": 5, "estimate_s": 300}}
    return train, plan


def test_a_run_stopped_at_the_budget_keeps_what_it_finished(tmp_path):
    train, plan = _stopped_run(tmp_path, with_metrics=True)
    log = tmp_path / "train.log"
    log.write_text("INFO medmm.train: caches ready in 120 s (10496 records)\n")
    run = {"rc": -15, "timed_out": True, "wall_s": 400.0, "limit_s": 400.0}
    r = gpu_run.training_result(train, log, run, plan)
    assert r["status"] == "partial" and "resume" in r["reason"]
    assert r["finished"]["cv_folds"] == ["fold0"] and r["finished"]["final_fit"] and r["cache_s"] == 120
    assert (train / "folds" / "fold1.npz.partial").exists()  # cut mid-write: set aside so a resume refits it
    assert (train / "cache" / "stem_abc.pt").exists()         # the cache was complete: kept for the resume
    assert r["oof_auc"] == {"Pneumonia": 0.9}


def test_a_run_stopped_before_any_metrics_failed(tmp_path):
    train, plan = _stopped_run(tmp_path, with_metrics=False)
    log = tmp_path / "train.log"
    log.write_text("INFO medmm.train: kermany: 5190 images\n")
    r = gpu_run.training_result(train, log, {"rc": -15, "timed_out": True, "wall_s": 9.0, "limit_s": 9.0}, plan)
    assert r["status"] == "failed" and "limit" in r["reason"]
    assert (train / "cache" / "stem_abc.pt.partial").exists()  # stopped while the cache was being written


def test_without_cuda_the_full_run_stops_with_status_2(tmp_path, monkeypatch, capsys):
    def no_cuda(out, budget):
        (out / "machine.json").write_text(json.dumps({"cuda_available": False}))
        return {"status": "ok"}

    monkeypatch.setattr(gpu_run, "machine_stage", no_cuda)
    assert gpu_run.main(["--out", str(tmp_path)]) == 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stages"]["train"]["status"] == "skipped" and "--smoke" in capsys.readouterr().err
