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


def _write_manifest(tmp_path, n=24, nih=False):
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
        if nih:  # NIH-style labels on all but the last two rows (blank = unknown)
            rows[-1]["nih_labels"] = "" if i >= n - 2 else ("Pneumonia|Effusion" if sick else "No Finding")
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
def test_contrastive_term_trains_on_the_projected_notes_features(tmp_path, sentence):
    """``--contrastive-weight`` aligns the image projection with the notes features as the fusion projects them
    (bag of words and expert column included, the sentence embedding only where the model reads it)."""
    from medmm.models.checkpoint import load_checkpoint
    from medmm.training.train import main as train

    manifest = _write_manifest(tmp_path, 16)
    out = tmp_path / "run"
    assert train(["--out", str(out), "--sources", "", "--manifest", str(manifest), "--folds", "0", "--epochs", "1",
                  "--aug-views", "1", "--batch-size", "8", "--no-progress", "--no-pretrained",
                  "--contrastive-weight", "0.1", sentence]) == 0
    model, meta = load_checkpoint(out / "checkpoint")[:2]
    assert meta.model.sentence_embedding is (sentence == "--sentence-embedding")


def test_weight_average_is_the_warmed_up_exponential_average_and_apply_writes_it():
    """``--ema-decay``: after each step the shadow is ``d_k * shadow + (1 - d_k) * weight`` with the warmed-up
    decay ``d_k = min(decay, (1 + k) / (10 + k))``; ``apply`` puts the average, not the last weight, in the model."""
    import torch

    from medmm.training.train import WeightAverage

    p = torch.nn.Parameter(torch.zeros(3))
    ema = WeightAverage([p], decay=0.9)
    expected = np.zeros(3)
    for k, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0], start=1):
        with torch.no_grad():
            p.fill_(value)
        ema.update()
        d = min(0.9, (1 + k) / (10 + k))
        expected = d * expected + (1 - d) * value
    assert ema.steps == 12
    np.testing.assert_allclose(ema.shadow[0].numpy(), expected, rtol=1e-6)
    assert float(p.detach()[0]) == 12.0
    ema.apply()
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-6)
    assert 0 < expected[0] < 12.0


@pytest.mark.slow
def test_soup_is_the_mean_of_its_members_and_member_zero_is_the_plain_run(tmp_path):
    """``--soup 2``: two members from the same start with other data orders; the model it keeps holds the exact
    mean of their weights, its first member trains exactly as a one-member run, and each fold file keeps the
    members' own predictions (what ``scripts/oof_compare.py RUN@member0`` reads)."""
    from dataclasses import replace

    import torch

    from medmm.training.train import Run, main as train, parse_args, predict_states, train_model

    manifest = _write_manifest(tmp_path, 16)
    argv = ["--sources", "", "--manifest", str(manifest), "--epochs", "1", "--aug-views", "1", "--batch-size", "4",
            "--no-progress", "--no-pretrained"]
    args, cfg = parse_args(["--out", str(tmp_path / "run"), "--folds", "0", "--soup", "2", *argv])
    run = Run(args, cfg, 0, 1, "cpu")
    train_idx, test_idx = np.arange(10), np.arange(10, 16)

    def trained(member):
        m = train_model(run.fresh_model(), run.batcher, train_idx, run.cfg, "m", False, member=member)
        return ({k: v.clone() for k, v in m.state_dict().items() if v.is_floating_point()},
                predict_states(m, run.batcher, test_idx, run.cfg))

    (w0, p0), (w1, p1) = trained(0), trained(1)
    soup, member_preds = run.train(train_idx, "soup", test_idx)
    changed = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert changed, "the two members trained identically: the member seed does not reach the data order"
    for k in changed:
        torch.testing.assert_close(soup.state_dict()[k], (w0[k] + w1[k]) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(member_preds[0]["full"], p0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(member_preds[1]["full"], p1, rtol=1e-5, atol=1e-6)
    # a one-member run equals member 0 of the soup, and a soup run's fold files keep both members
    run.cfg = replace(run.cfg, soup=1)
    single, no_members = run.train(train_idx, "plain", test_idx)
    assert no_members == []
    np.testing.assert_allclose(predict_states(single, run.batcher, test_idx, run.cfg), p0, rtol=1e-5, atol=1e-6)
    out = tmp_path / "cv"
    assert train(["--out", str(out), "--folds", "2", "--soup", "2", *argv]) == 0
    fold = np.load(out / "folds" / "fold0.npz")
    assert {"full", "member0_full", "member1_full", "member1_notes_only"} <= set(fold.files)
    assert not np.allclose(fold["member0_full"], fold["member1_full"])


@pytest.mark.slow
def test_aux_nih_head_reaches_the_encoder_and_leaves_the_checkpoint_unchanged(tmp_path):
    """``--aux-nih-weight``: the NIH labels of a manifest's ``nih_labels`` column train the image encoder's tail
    through a training-only head; the saved model has exactly the parameters of a run without it."""
    from dataclasses import replace

    import torch

    from medmm.models.checkpoint import load_checkpoint
    from medmm.training.train import Run, main as train, parse_args, train_model

    manifest = _write_manifest(tmp_path, 16, nih=True)
    recs = manifest_records(manifest)
    assert recs[0].aux is not None and recs[0].aux.sum() == 0 and recs[1].aux.sum() == 2 and recs[-1].aux is None
    argv = ["--sources", "", "--manifest", str(manifest), "--epochs", "1", "--aug-views", "1", "--batch-size", "4",
            "--no-progress", "--no-pretrained", "--folds", "0"]
    args, cfg = parse_args(["--out", str(tmp_path / "run"), *argv])
    run = Run(args, cfg, 0, 1, "cpu")

    def encoder_after_training(aux_weight):  # same start, same data order: only the auxiliary term differs
        run.cfg = replace(cfg, aux_nih_weight=aux_weight)
        m = train_model(run.fresh_model(), run.batcher, np.arange(16), run.cfg, "m", False)
        return {k: v.clone() for k, v in m.state_dict().items() if k.startswith("image_encoder.")}

    plain, again, aux = encoder_after_training(0.0), encoder_after_training(0.0), encoder_after_training(5.0)
    assert all(torch.equal(plain[k], again[k]) for k in plain)  # so a difference below is the auxiliary head's
    changed = [k for k in plain if not torch.equal(plain[k], aux[k])]
    assert changed, "the auxiliary loss did not reach the image encoder"
    keys = []
    for w in ("0", "5"):
        assert train(["--out", str(tmp_path / f"full{w}"), "--aux-nih-weight", w, *argv]) == 0
        keys.append(set(load_checkpoint(tmp_path / f"full{w}" / "checkpoint")[0].state_dict()))
    assert keys[0] == keys[1]
