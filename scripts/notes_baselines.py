"""Notes-only COVID-19 ranking on the COVID collection: the notes expert with and without character n-grams.

    python scripts/notes_baselines.py                 # 10 fold seeds x patient-grouped 5-fold CV, ~1 min

Rows: the COVID collection's notes with a COVID-19 label (the rows the expert is fitted on in training). Each seed
shuffles the patients into 5 folds; every fold fits ``NotesExpert`` on the other four (the same class and settings
training uses) and scores the held-out notes. Printed: mean ± std over seeds of the pooled out-of-fold AUC, and the
paired difference to the words-only expert (which is the TF-IDF + logistic-regression baseline of
``heldout_metrics.tfidf_baseline``: same n-grams, ``min_df``, ``C``).
"""

from __future__ import annotations

import argparse

import numpy as np

from medmm.labels import FINDINGS
from medmm.models.notes_expert import NotesExpert
from medmm.training.data import label_matrix, load_records
from medmm.training.metrics import roc_auc


def grouped_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    patients = rng.permutation(np.unique(groups))
    fold_of = {p: i % k for i, p in enumerate(patients)}
    return np.array([fold_of[g] for g in groups])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args(argv)
    records = load_records(("covid",))
    j = FINDINGS.index("COVID-19")
    labels = label_matrix(records)
    rows = [i for i, r in enumerate(records) if r.notes is not None and not np.isnan(labels[i, j])]
    notes, y = [records[i].notes for i in rows], labels[rows, j]
    groups = np.array([records[i].patient_id for i in rows])
    print(f"{len(rows)} notes, {int(y.sum())} COVID-19, {len(np.unique(groups))} patients")
    variants = {"words (TF-IDF baseline; the default)": None, "words + characters (--notes-expert-chars)": (2, 5)}
    aucs: dict[str, list[float]] = {name: [] for name in variants}
    for seed in range(args.seeds):
        folds = grouped_folds(groups, args.folds, seed)
        for name, chars in variants.items():
            score = np.zeros(len(y))
            for k in range(args.folds):
                tr, va = np.where(folds != k)[0], np.where(folds == k)[0]
                expert = NotesExpert.fit([notes[i] for i in tr], y[tr], "COVID-19", char_ngrams=chars)
                score[va] = expert.features([notes[i] for i in va])
            aucs[name].append(roc_auc(y, score))
    base = np.array(aucs["words (TF-IDF baseline; the default)"])
    print("| notes expert | AUC (mean ± std over seeds) | paired difference to words |\n|---|---|---|")
    for name, values in aucs.items():
        v = np.array(values)
        print(f"| {name} | {v.mean():.3f} ± {v.std():.3f} | {(v - base).mean():+.3f} ± {(v - base).std():.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
