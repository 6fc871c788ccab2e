"""Compare training runs on their out-of-fold state logits (``RUN/oof.npz``), also for runs stopped after CV.

    python scripts/oof_compare.py runs/r7 runs/r9 runs/r10            # the MODEL_CARD comparison rows
    python scripts/oof_compare.py runs/r7 --expert-boost             # + notes-only with extra notes-expert weight
    python scripts/oof_compare.py runs/r11 runs/r12 --per-fold       # per finished fold (runs stopped mid-CV too)
    python scripts/oof_compare.py runs/r11 runs/r14 --paired         # + r14 - r11 with paired bootstrap CIs
    python scripts/oof_compare.py runs/r18@member0 runs/r18@members runs/r18 --paired   # a soup (--soup 2)
    python scripts/oof_compare.py runs/r18@member0 runs/r18@member1 runs/r18 --loso --paired   # its LOSO runs

A run stopped after its last fold but before writing ``oof.npz`` is read from its ``RUN/folds``.
``RUN@memberK`` is member K of a soup run alone (from ``RUN/folds``), ``RUN@members`` the mean of its members'
state logits (a prediction ensemble); ``RUN`` itself is the soup (the averaged weights).
Per run: COVID-19 AUC on the COVID-collection rows with notes (image + notes / image only / notes only),
normal-vs-abnormal AUC on ``nih_sample`` (1 - P(No Finding)) and pneumonia AUC on Kermany. Probabilities are
``marginals(state_probs(logits, 1.0))``, the same functions ``evaluate_oof`` uses, at temperature 1 (a run stopped
after its CV has no fitted temperature). ``--loso`` compares the leave-one-source-out runs instead
(``RUN/folds/loso_*.npz``): pneumonia AUC on Kermany without Kermany, COVID-19 AUC on the COVID collection
without it, normal-vs-abnormal AUC on ``nih_sample`` and ``nih`` without NIH. ``--expert-boost`` refits the notes
expert on each fold's training notes (as training does) and adds ``c x`` its word evidence to the notes-only COVID-19 log-odds: how far the rest of the
notes pathway is from the expert alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medmm.config import TrainConfig
from medmm.labels import FINDINGS, marginals
from medmm.models.notes_expert import NotesExpert
from medmm.training.data import label_matrix, load_records
from medmm.training.metrics import paired_auc_difference, roc_auc
from medmm.training.calibration import state_probs


def _probs(logits: np.ndarray) -> np.ndarray:
    return marginals(state_probs(logits, 1.0))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


CONDITIONS = ("full", "image_only", "notes_only")


def _split(run: Path) -> tuple[Path, str]:
    """``runs/r18@member0`` -> (``runs/r18``, ``member0``); a plain run -> (run, "")."""
    base, _, member = str(run).partition("@")
    return Path(base), member


def _fold_logits(f, member: str) -> dict[str, np.ndarray]:
    """The three conditions' logits of one fold file: the run's own, one soup member's, or the members' mean."""
    if not member:
        return {c: f[c] for c in CONDITIONS}
    if member == "members":
        keys = sorted({k.split("_", 1)[0] for k in f.files if k.startswith("member")})
        if not keys:
            raise SystemExit("no member predictions in this run's fold files (not a soup run)")
        return {c: np.mean([f[f"{k}_{c}"] for k in keys], axis=0) for c in CONDITIONS}
    if f"{member}_full" not in f.files:
        raise SystemExit(f"no {member} predictions in this run's fold files (not a soup run, or no such member)")
    return {c: f[f"{member}_{c}"] for c in CONDITIONS}


def _paired_row(first_run: Path, first: list, cols: list) -> str:
    """The table row of ``cols`` minus ``first`` (same rows): each AUC difference with its paired bootstrap CI
    ("–" where either run has no such column)."""
    diffs = [None if a is None or b is None else paired_auc_difference(a[0], a[1], b[1], a[2])
             for a, b in zip(first, cols)]
    return f"| − {first_run} (paired) | " + " | ".join(
        "–" if x is None else f"{x['delta']:+.3f} ({x['ci95'][0]:+.3f} to {x['ci95'][1]:+.3f})" for x in diffs) + " |"


def _oof(run: Path, n: int) -> dict:
    """``RUN/oof.npz``, or the same logits put together from ``RUN/folds`` when the run was stopped after its
    last fold but before writing it, or for one member of a soup (every row must be in exactly one fold)."""
    run, member = _split(run)
    if (run / "oof.npz").is_file() and not member:
        return dict(np.load(run / "oof.npz"))
    parts = [_fold_logits(f, member) | {"val_idx": f["val_idx"]}
             for f in map(np.load, sorted((run / "folds").glob("fold*.npz")))]
    idx = np.concatenate([f["val_idx"] for f in parts]) if parts else np.zeros(0, int)
    if len(idx) != n or len(np.unique(idx)) != n:
        raise SystemExit(f"{run}: no oof.npz and its finished folds do not cover the {n} records once each")
    out = {"folds": np.empty(n, int)}
    for k, f in enumerate(parts):
        out["folds"][f["val_idx"]] = k
    for c in CONDITIONS:
        out[c] = np.empty((n, parts[0][c].shape[1]), np.float32)
        for f in parts:
            out[c][f["val_idx"]] = f[c]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--expert-boost", action="store_true")
    ap.add_argument("--paired", action="store_true",
                    help="also each later run minus the first, with a patient-level paired bootstrap 95 %% CI")
    ap.add_argument("--per-fold", action="store_true",
                    help="one row per finished fold, from RUN/folds/fold*.npz (no oof.npz needed)")
    ap.add_argument("--loso", action="store_true",
                    help="compare the leave-one-source-out runs (RUN/folds/loso_*.npz) instead of the CV")
    args = ap.parse_args(argv)
    records = load_records(TrainConfig().sources)
    labels, sources = label_matrix(records), np.array([r.source for r in records])
    notes = [r.notes for r in records]
    cj, nf, pn = (FINDINGS.index(f) for f in ("COVID-19", "No Finding", "Pneumonia"))
    covid = (sources == "covid") & np.array([n is not None for n in notes]) & ~np.isnan(labels[:, cj])
    nih, kermany = sources == "nih_sample", sources == "kermany"
    groups = np.array([r.patient_id for r in records])

    def columns(logits: dict, m: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(labels, scores, patients) of the five AUCs on the rows ``m`` (``logits[c]`` indexed like ``m``'s true
        positions)."""
        out = [(labels[covid & m, cj], _probs(logits[c][covid[m]])[:, cj], groups[covid & m])
               for c in ("full", "image_only", "notes_only")]
        out.append((1 - labels[nih & m, nf], 1 - _probs(logits["full"][nih[m]])[:, nf], groups[nih & m]))
        out.append((labels[kermany & m, pn], _probs(logits["full"][kermany[m]])[:, pn], groups[kermany & m]))
        return out

    def row(logits: dict, m: np.ndarray) -> list[float]:
        return [roc_auc(y, score) for y, score, _ in columns(logits, m)]

    def loso_columns(run: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """As ``columns`` for the leave-one-source-out runs; None for a site whose run has not finished."""
        base, member = _split(run)
        out = []
        for site, src, j, abnormal in (("kermany", "kermany", pn, False), ("covid", "covid", cj, False),
                                        ("nih", "nih_sample", nf, True), ("nih", "nih", nf, True)):
            path = base / "folds" / f"loso_{site}.npz"
            if not path.is_file():
                out.append(None)
                continue
            f = np.load(path)
            m = np.zeros(len(records), bool)
            m[f["val_idx"]] = True
            p = _probs(_fold_logits(f, member)["full"][np.argsort(f["val_idx"])])[:, j]
            sel = (sources == src) & m & ~np.isnan(labels[:, j])
            y, score = labels[sel, j], p[sel[m]]
            out.append((1 - y, 1 - score, groups[sel]) if abnormal else (y, score, groups[sel]))
        return out

    if args.loso:
        print("| run (left out) | Kermany pneumonia | COVID collection COVID-19 | nih_sample normal vs abnormal | nih |\n"
              "|---|---|---|---|---|")
        first = None
        for run in args.runs:
            cols = loso_columns(run)
            if not any(cols):
                raise SystemExit(f"{run}: no finished leave-one-source-out run in {_split(run)[0] / 'folds'}")
            print(f"| {run} | " + " | ".join("–" if c is None else f"{roc_auc(c[0], c[1]):.3f}" for c in cols) + " |")
            if args.paired and first is not None:
                print(_paired_row(args.runs[0], first, cols))
            first = first or cols
        return 0
    print("| run | image + notes | image only | notes only | nih_sample | Kermany |\n|---|---|---|---|---|---|")
    if args.per_fold:
        for run in args.runs:
            base, member = _split(run)
            for path in sorted((base / "folds").glob("fold*.npz")):
                f = np.load(path)
                m = np.zeros(len(records), bool)
                m[f["val_idx"]] = True
                order = np.argsort(f["val_idx"])  # fold files list their rows in val_idx order
                logits = {c: v[order] for c, v in _fold_logits(f, member).items()}
                print(f"| {run} {path.stem} | " + " | ".join(f"{v:.3f}" for v in row(logits, m)) + " |")
        return 0
    everyone = np.ones(len(records), bool)
    first = None
    for run in args.runs:
        d = _oof(run, len(records))
        if "sources" in d and not np.array_equal(d["sources"], sources):
            raise SystemExit(f"{run}: its records are not the default sources' (other --sources or data)")
        print(f"| {run} | " + " | ".join(f"{v:.3f}" for v in row(d, everyone)) + " |")
        if args.paired:
            cols = columns(d, everyone)
            if first is not None:
                print(_paired_row(args.runs[0], first, cols))
            first = first or cols
        if args.expert_boost:
            y, evidence = labels[:, cj], np.zeros(len(records))
            for k in np.unique(d["folds"]):
                fit = [i for i in np.where(d["folds"] != k)[0] if covid[i]]
                # words only, as the notes expert of the runs this compares was (--notes-expert-chars came later)
                expert = NotesExpert.fit([notes[i] for i in fit], y[fit], "COVID-19", char_ngrams=None)
                test = np.where(d["folds"] == k)[0]
                evidence[test] = expert.features([notes[i] for i in test])
            z = _logit(_probs(d["notes_only"][covid])[:, cj])
            boosted = ", ".join(f"+{c}x: {roc_auc(y[covid], z + c * evidence[covid]):.3f}" for c in (1, 2, 4, 8))
            print(f"  notes expert alone {roc_auc(y[covid], evidence[covid]):.3f}; notes only {boosted}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
