import csv
import json
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medmm.training.data import Record, kermany_records, manifest_records, patient_folds
from medmm.labels import FINDINGS, kermany_labels
from tests.helpers import require_shared


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 1)), min_size=12, max_size=120), st.integers(2, 5))
def test_folds_are_patient_disjoint(rows, k):
    records = [Record("kermany", f"kermany:p{pid}", f"img{i}", None,
                      kermany_labels("PNEUMONIA" if lab else "NORMAL", "person1_virus_1.jpeg"))
               for i, (pid, lab) in enumerate(rows)]
    n_patients = len({r.patient_id for r in records})
    if n_patients < k:
        with pytest.raises(ValueError):
            patient_folds(records, k)
        return
    folds = patient_folds(records, k, seed=0)
    seen: dict[str, set[int]] = defaultdict(set)
    for r, f in zip(records, folds):
        seen[r.patient_id].add(int(f))
    assert all(len(v) == 1 for v in seen.values())
    assert (folds >= 0).all() and len(set(folds.tolist())) == k


def test_kermany_duplicates_removed_and_never_straddle_folds():
    require_shared("kermany224")
    records = kermany_records()
    import hashlib
    digests = [hashlib.md5(open(r.image, "rb").read()).hexdigest() for r in records]
    assert len(set(digests)) == len(digests)  # no exact duplicate left
    assert 5150 < len(records) < 5216
    folds = patient_folds(records, 5)
    by_patient = defaultdict(set)
    for r, f in zip(records, folds):
        by_patient[r.patient_id].add(int(f))
    assert all(len(v) == 1 for v in by_patient.values())


def _write_manifest(tmp_path, n=24):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        sick = i % 2
        img = rng.normal(0.3 + 0.4 * sick, 0.1, (64, 64)).clip(0, 1)
        path = tmp_path / f"scan{i}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(path)
        rows.append({"image": path.name, "notes": "fever and productive cough" if sick else "routine check",
                     "patient_id": f"p{i // 2}", "No Finding": 1 - sick, "Pneumonia": sick,
                     "Bacterial pneumonia": "", "Viral pneumonia": "", "COVID-19": ""})
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def test_manifest_blank_is_unknown(tmp_path):
    recs = manifest_records(_write_manifest(tmp_path, 4))
    assert recs[1].labels[FINDINGS.index("Pneumonia")] == 1
    assert np.isnan(recs[1].labels[FINDINGS.index("COVID-19")])
    assert recs[0].patient_id == recs[1].patient_id == "manifest:p0"


@pytest.mark.slow
def test_smoke_training_produces_loadable_checkpoint(tmp_path):
    from medmm.__main__ import main as cli
    from medmm.pipeline import Pipeline
    from medmm.training.train import main as train

    manifest = _write_manifest(tmp_path)
    out = tmp_path / "run"
    assert train(["--out", str(out), "--sources", "", "--manifest", str(manifest), "--folds", "2", "--epochs", "1",
                  "--aug-views", "1", "--batch-size", "8", "--no-progress"]) == 0
    assert (out / "folds" / "fold1.npz").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["folds"] == 2 and metrics["training"]["records"] == {"manifest": 24}
    assert metrics["training"]["energy"]["total"]["joules"] > 0
    pipe = Pipeline.from_checkpoint(out / "checkpoint")
    assert pipe.meta.trained and pipe.ood is not None
    pred = pipe.predict([tmp_path / "scan1.png"], "fever")
    assert set(pred.findings) == set(FINDINGS) and all(0 <= p <= 1 for p in pred.findings.values())
    # evaluate on the same manifest through the CLI
    assert cli(["evaluate", "--manifest", str(manifest), "--checkpoint", str(out / "checkpoint"),
                "--bootstrap", "50", "--out", str(tmp_path / "eval.json")]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["evaluated"] == 24 and ev["findings"]["Pneumonia"]["n"] == 24
    # resuming skips finished folds and gives the same out-of-fold predictions
    before = np.load(out / "oof.npz")["full"]
    assert train(["--out", str(out), "--sources", "", "--manifest", str(manifest), "--folds", "2", "--epochs", "1",
                  "--aug-views", "1", "--batch-size", "8", "--no-progress"]) == 0
    np.testing.assert_array_equal(np.load(out / "oof.npz")["full"], before)


@pytest.mark.slow
@pytest.mark.parametrize("sentence", ["--sentence-embedding", "--no-sentence-embedding"])
def test_sentence_embedding_option_trains_and_is_stored(tmp_path, sentence):
    """``--sentence-embedding`` / ``--no-sentence-embedding``: the notes pathway the fusion reads is trained and the
    checkpoint records which."""
    from medmm.models.checkpoint import load_checkpoint
    from medmm.training.train import main as train

    manifest = _write_manifest(tmp_path, 16)
    out = tmp_path / "run"
    assert train(["--out", str(out), "--sources", "", "--manifest", str(manifest), "--folds", "0", "--epochs", "1",
                  "--aug-views", "1", "--batch-size", "8", "--no-progress", "--no-pretrained", sentence]) == 0
    model, meta = load_checkpoint(out / "checkpoint")[:2]
    assert meta.model.sentence_embedding is (sentence == "--sentence-embedding")


