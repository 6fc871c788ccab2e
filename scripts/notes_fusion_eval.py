"""The notes-as-evidence fusion on unseen patients: out-of-fold image probabilities + the notes' evidence.

A training run's ``oof.npz`` holds, for every row, the image model's state logits from a fold that never saw that
patient (``image_only``). The notes' evidence (``medmm.notes``: a fixed table of published likelihood ratios,
nothing fitted to these data) is applied to them exactly as the pipeline applies it, so the figures below are
out-of-fold for the image and unseen for the notes:

* COVID collection rows with notes: COVID-19 AUC from the image alone, the notes alone (pre-test + evidence),
  image + notes (Bayes), and the checkpoint's learned notes pathway (``full``, for comparison), with
  patient-bootstrap CIs and the paired difference image + notes minus image alone;
* Kermany (children), every film with one note ("Fever and productive cough for 3 days." by default): Pneumonia
  AUC, sensitivity and specificity at the stored threshold, image alone against image + note;
* adult films (both NIH sets) with the knee pre-op note: the largest rise of COVID-19 and Pneumonia (none expected).

    .venv/bin/python scripts/notes_fusion_eval.py runs/oof [--json runs/oof/notes_fusion.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from medmm.config import TrainConfig
from medmm.labels import FINDINGS
from medmm.models.checkpoint import DEFAULT_CHECKPOINT
from medmm.notes import combine, marginals, pretest_states, read_note, update_states
from medmm.training.data import load_records
from medmm.training.metrics import binary_metrics, paired_auc_difference
from medmm.training.calibration import state_probs

KERMANY_NOTE = "Fever and productive cough for 3 days."
KNEE_NOTE = "58M, pre-op knee replacement, no respiratory symptoms."


def _fmt(m: dict) -> str:
    auc, se, sp = m["auc"], m["sensitivity"], m["specificity"]
    return (f"AUC {auc['value']:.3f} ({auc['ci95'][0]:.3f}–{auc['ci95'][1]:.3f}), sensitivity {se['value']:.3f}, "
            f"specificity {sp['value']:.3f} (n={m['n']}, {m['n_positive']} positive)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", default="runs/oof", help="a training run folder with oof.npz")
    ap.add_argument("--kermany-note", default=KERMANY_NOTE)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    oof = np.load(Path(args.run) / "oof.npz", allow_pickle=False)
    cfg = TrainConfig()
    records = load_records(cfg.sources, None, cfg.limit_per_source, cfg.seed)
    patients = np.array([r.patient_id for r in records])
    if len(records) != len(oof["patients"]) or not np.array_equal(patients, oof["patients"]):
        raise SystemExit("the run's rows are not the default sources' records (other sources, limit or seed)")
    meta = json.loads((Path(DEFAULT_CHECKPOINT) / "medmm.json").read_text())
    thresholds = meta["thresholds"]
    f = {name: i for i, name in enumerate(FINDINGS)}
    labels = oof["labels"]
    image_states = state_probs(oof["image_only"].astype(np.float64), 1.0)
    image_p = marginals(image_states)
    out: dict[str, object] = {"run": str(args.run)}

    # --- COVID collection, rows with notes
    rows = [i for i, r in enumerate(records) if r.source == "covid" and r.notes
            and not np.isnan(labels[i, f["COVID-19"]]) and not np.isnan(oof["image_only"][i]).any()]
    y = labels[rows, f["COVID-19"]]
    groups = patients[rows]
    both, notes_only = [], []
    for i in rows:
        ev = combine(read_note(records[i].notes), "adult")
        both.append(marginals(update_states(image_states[i], ev.log_lr))[f["COVID-19"]])
        notes_only.append(marginals(update_states(pretest_states(ev.population)[0], ev.log_lr))[f["COVID-19"]])
    scores = {"image only (out-of-fold)": image_p[rows, f["COVID-19"]], "notes only (evidence from pre-test)":
              np.array(notes_only), "image + notes (evidence, Bayes)": np.array(both),
              "learned notes pathway (checkpoint recipe, out-of-fold)":
                  marginals(state_probs(oof["full"][rows].astype(np.float64), 1.0))[:, f["COVID-19"]]}
    t = thresholds["COVID-19"]
    print(f"COVID collection rows with notes, COVID-19 (unseen patients), stored threshold {t:.3f}:")
    out["covid"] = {}
    for name, s in scores.items():
        m = binary_metrics(y, s, t, groups=groups)
        out["covid"][name] = m
        print(f"  {name:<55} {_fmt(m)}")
    d = paired_auc_difference(y, scores["image only (out-of-fold)"], scores["image + notes (evidence, Bayes)"], groups)
    out["covid"]["image+notes minus image"] = d
    print(f"  paired AUC difference, image + notes minus image alone: {d['delta']:+.3f} "
          f"({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})")

    # --- Kermany with one note
    rows = [i for i, r in enumerate(records) if r.source == "kermany"]
    y = labels[rows, f["Pneumonia"]]
    ev = combine(read_note(args.kermany_note), "child")
    with_note = marginals(update_states(image_states[rows], ev.log_lr))[:, f["Pneumonia"]]
    t = thresholds["Pneumonia"]
    print(f"\nKermany (children, out-of-fold), Pneumonia at the stored threshold {t:.3f}; note: {args.kermany_note!r} "
          f"(log LR {ev.log_lr.get('Pneumonia', 0.0):+.3f}):")
    out["kermany"] = {"note": args.kermany_note}
    for name, s in (("image alone", image_p[rows, f["Pneumonia"]]), ("image + note", with_note)):
        m = binary_metrics(y, s, t, groups=patients[rows])
        out["kermany"][name] = m
        print(f"  {name:<14} {_fmt(m)}")

    # --- adult films with the knee pre-op note
    rows = [i for i, r in enumerate(records) if r.source in ("nih", "nih_sample")]
    ev = combine(read_note(KNEE_NOTE))
    after = marginals(update_states(image_states[rows], ev.log_lr))
    rise = {k: float(np.max(after[:, f[k]] - image_p[rows, f[k]])) for k in ("COVID-19", "Pneumonia")}
    out["knee"] = {"note": KNEE_NOTE, "n": len(rows), "largest_rise": rise}
    print(f"\nAdult films (NIH, n={len(rows)}) with {KNEE_NOTE!r}: largest rise COVID-19 {rise['COVID-19']:+.4f}, "
          f"Pneumonia {rise['Pneumonia']:+.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
