"""Distributed training through torchrun + DDP (gloo, 2 CPU processes): both ranks must agree."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.test_data_train import _write_manifest


@pytest.mark.slow
def test_two_rank_gloo_training_agrees(tmp_path):
    manifest = _write_manifest(tmp_path, 16)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "medmm.train", "--out", str(out), "--sources", "", "--manifest", str(manifest), "--folds", "2",
           "--epochs", "1", "--aug-views", "1", "--batch-size", "4", "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["weights_sha256"] == r1["weights_sha256"]
    assert r0["pneumonia_auc"] == r1["pneumonia_auc"]
    assert (out / "checkpoint" / "medmm.json").is_file()
