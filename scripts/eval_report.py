"""Evaluate notes-only report drafting on a held-out split of the IU chest X-ray reports.

    python scripts/eval_report.py                         # notes-only logistic-regression predictor
    python scripts/eval_report.py --checkpoint checkpoints/default   # medmm.pipeline.Pipeline instead
    python scripts/eval_report.py --out runs/eval_report.json

Protocol
--------
* Split: a fixed-seed, hash-based 20% of report ``uid``s is held out (IU has one report per ``uid`` and no other
  patient key). The sentence bank *and* the predictor are built from the other 80% only (no leakage).
* Input: the ``indication`` text only (no image). Prediction: per-finding logistic regression on
  ``embed_texts(indication)``, sigmoid-calibrated (5-fold), trained on the IU MeSH labels
  (``medmm.labels.iu_report_labels``; unknown entries are skipped), threshold = Youden's J on out-of-fold
  probabilities (the project's operating point). Findings without positive training labels (IU has no subtype or COVID-19 labels) get
  probability 0.
* Draft -> compare with the real findings + impression:
  - label agreement: ``medmm.report.labeler.binary_labels`` on both texts (uncertain counts as present), micro/macro F1;
  - BLEU-4 (sacrebleu, corpus, lower-cased, 13a tokens) and ROUGE-L F (rouge-score), with ``XXXX`` removed from
    the references and meta sentences (no-image caveat, inconsistency warning, organism caveat, "no descriptive
    findings") and the "(model probability ...)" suffixes removed from the drafts.
* Baselines on the same split: constant normal draft; drafts from the true MeSH labels ("oracle labels");
  nearest-neighbour retrieval of a whole training report by indication embedding.

Caveat: R2Gen reports BLEU-4 ~0.165 on IU X-ray *from the images* (findings section only); this uses notes only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

# the sibling script: `python scripts/eval_report.py` puts scripts/ first on sys.path
from build_sentence_bank import DEFAULT_REPORTS, build_from_rows, read_reports
from medmm.report.labeler import binary_labels
from medmm.labels import FINDINGS, iu_report_labels
from medmm.training.metrics import youden_threshold
from medmm.prediction import Prediction
from medmm.report import T_INCONSISTENT, T_NO_IMAGE, T_NOT_ASSESSED, T_SUBTYPE_CAVEAT, draft_report


log = logging.getLogger("eval_report")
# sentences about the draft itself, not the patient (T_NOT_ASSESSED replaced the empty-findings sentence)
META_SENTENCES = {T_NO_IMAGE, T_INCONSISTENT, T_SUBTYPE_CAVEAT, T_NOT_ASSESSED}
_PROB_RE = re.compile(r"\s*\(model probability [0-9.]+\)")


def is_test(uid: str, seed: int, fraction: float) -> bool:
    """Deterministic, order-independent split by uid."""
    h = int(hashlib.sha256(f"medmm-report-eval:{seed}:{uid}".encode()).hexdigest(), 16)
    return (h % 10_000) < fraction * 10_000


def reference_text(row: dict[str, str]) -> str:
    text = f"{row.get('findings') or ''} {row.get('impression') or ''}".replace("XXXX", " ")
    return " ".join(text.split())


def hypothesis_text(report: Any) -> str:
    """Draft prose for text metrics: meta sentences and probability suffixes removed."""
    parts = [_PROB_RE.sub("", s.text) for s in report.sentences if s.text not in META_SENTENCES]
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ predictors
class NotesPredictor:
    """Per-finding calibrated logistic regression on notes embeddings (trained on the train split only)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.models: dict[str, Any] = {}
        self.thresholds: dict[str, float] = {}
        self.train_summary: dict[str, Any] = {}

    def fit(self, x: np.ndarray, y: np.ndarray) -> "NotesPredictor":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        for j, finding in enumerate(FINDINGS):
            known = ~np.isnan(y[:, j])
            yj = y[known, j].astype(int)
            n_pos = int(yj.sum())
            self.train_summary[finding] = {"known": int(known.sum()), "positive": n_pos}
            if n_pos < 10 or n_pos > len(yj) - 10:
                self.models[finding] = None
                self.thresholds[finding] = 0.5
                continue
            base = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
            model = CalibratedClassifierCV(base, method="sigmoid", cv=5)
            folds = StratifiedKFold(5, shuffle=True, random_state=self.seed)
            oof = cross_val_predict(model, x[known], yj, cv=folds, method="predict_proba")[:, 1]
            self.thresholds[finding] = youden_threshold(yj, oof)   # the project's operating point
            self.models[finding] = model.fit(x[known], yj)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), len(FINDINGS)), np.float64)
        for j, finding in enumerate(FINDINGS):
            if self.models[finding] is not None:
                out[:, j] = self.models[finding].predict_proba(x)[:, 1]
        return out


def make_prediction(probs: dict[str, float], thresholds: dict[str, float], emb: np.ndarray | None) -> Prediction:
    return Prediction(findings=probs, thresholds=thresholds,
                      positive=tuple(f for f in FINDINGS if probs[f] >= thresholds[f]), modalities=("notes",),
                      notes_embedding=emb)


# ------------------------------------------------------------------------------------------ metrics
def label_metrics(refs: list[str], hyps: list[str]) -> dict[str, Any]:
    from sklearn.metrics import f1_score, precision_score, recall_score

    r = np.array([[binary_labels(t)[f] for f in FINDINGS] for t in refs])
    h = np.array([[binary_labels(t)[f] for f in FINDINGS] for t in hyps])
    per = {}
    for j, f in enumerate(FINDINGS):
        per[f] = {"support": int(r[:, j].sum()), "predicted": int(h[:, j].sum()),
                  "precision": round(float(precision_score(r[:, j], h[:, j], zero_division=0)), 4),
                  "recall": round(float(recall_score(r[:, j], h[:, j], zero_division=0)), 4),
                  "f1": round(float(f1_score(r[:, j], h[:, j], zero_division=0)), 4)}
    with_support = [f for f in FINDINGS if per[f]["support"] > 0]
    return {"micro_f1": round(float(f1_score(r.ravel(), h.ravel(), zero_division=0)), 4),
            "macro_f1": round(float(np.mean([per[f]["f1"] for f in with_support])), 4) if with_support else None,
            "macro_over": with_support, "per_finding": per}


def text_metrics(refs: list[str], hyps: list[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    bleu = BLEU(lowercase=True, tokenize="13a").corpus_score(hyps, [refs])
    bleu1 = BLEU(lowercase=True, tokenize="13a", max_ngram_order=1).corpus_score(hyps, [refs])
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = float(np.mean([scorer.score(r, h)["rougeL"].fmeasure for r, h in zip(refs, hyps)]))
    return {"bleu4": round(bleu.score / 100, 4), "bleu1": round(bleu1.score / 100, 4), "rougeL_f": round(rouge, 4)}


def evaluate(name: str, refs: list[str], hyps: list[str]) -> dict[str, Any]:
    return {"name": name, **text_metrics(refs, hyps), "labels": label_metrics(refs, hyps)}


# ------------------------------------------------------------------------------------------ main
def embed_sorted(texts: list[str]) -> np.ndarray:
    """``embed_texts`` in length order (less padding per batch), returned in input order."""
    from medmm.models.encoders import embed_texts

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    emb = embed_texts([texts[i] for i in order], batch_size=64)
    out = np.empty_like(emb)
    out[order] = emb
    return out


def torch_threads() -> None:
    """Use every core for the text encoder (CPU runs)."""
    import os

    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=Path, default=DEFAULT_REPORTS)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="use medmm.pipeline.Pipeline from this checkpoint instead of the notes-only LR")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.reports.exists():
        parser.error(f"reports not found: {args.reports} (needs ../shared/data/iu_reports)")
    start = time.perf_counter()
    torch_threads()
    rows = read_reports(args.reports)
    train = [r for r in rows if not is_test(r["uid"], args.seed, args.test_fraction)]
    test = [r for r in rows if is_test(r["uid"], args.seed, args.test_fraction)]
    assert not {r["uid"] for r in train} & {r["uid"] for r in test}
    test = [r for r in test if reference_text(r)]
    log.info("train %d reports, test %d reports with a findings/impression", len(train), len(test))

    bank = build_from_rows(train, min_count=2, source="IU reports, train split only")
    need_train = args.checkpoint is None or not args.no_baselines   # LR training / nearest-neighbour baseline
    x_train = embed_sorted([r["indication"] or "" for r in train]) if need_train else None
    x_test = embed_sorted([r["indication"] or "" for r in test])
    refs = [reference_text(r) for r in test]
    has_notes = [bool((r["indication"] or "").replace("XXXX", "").strip(" .")) for r in test]

    if args.checkpoint is not None:
        from medmm.pipeline import Pipeline

        pipeline = Pipeline.from_checkpoint(args.checkpoint)
        preds = []
        for r in test:
            notes = r["indication"] or ""
            if notes.replace("XXXX", "").strip(" ."):
                preds.append(pipeline.predict(notes=notes))
            else:  # the pipeline refuses a request without inputs: treat as "no finding" prior
                preds.append(make_prediction({f: 0.0 for f in FINDINGS}, {f: 0.5 for f in FINDINGS}, None))
        predictor_info: dict[str, Any] = {"kind": "medmm.pipeline.Pipeline", "checkpoint": str(args.checkpoint),
                                          "meta": preds[0].checkpoint if preds else {}}
    else:
        y_train = np.stack([iu_report_labels(r["MeSH"]) for r in train])
        predictor = NotesPredictor(args.seed).fit(x_train, y_train)
        probs = predictor.predict_proba(x_test)
        preds = [make_prediction({f: float(p[j]) for j, f in enumerate(FINDINGS)}, predictor.thresholds,
                                 x_test[i] if has_notes[i] else None) for i, p in enumerate(probs)]
        predictor_info = {"kind": "notes-only calibrated logistic regression on embed_texts(indication)",
                          "thresholds": {f: round(t, 4) for f, t in predictor.thresholds.items()},
                          "train_labels": predictor.train_summary}
        y_test = np.stack([iu_report_labels(r["MeSH"]) for r in test])
        from sklearn.metrics import roc_auc_score

        aucs = {}
        for j, f in enumerate(FINDINGS):
            known = ~np.isnan(y_test[:, j])
            if predictor.models[f] is not None and len(set(y_test[known, j])) == 2:
                aucs[f] = round(float(roc_auc_score(y_test[known, j], probs[known, j])), 4)
        predictor_info["test_auroc_vs_mesh"] = aucs

    drafts = [draft_report(p, r["indication"], bank) for p, r in zip(preds, test)]
    results: dict[str, Any] = {
        "command": "python scripts/eval_report.py" + (f" --checkpoint {args.checkpoint}" if args.checkpoint else ""),
        "split": {"seed": args.seed, "test_fraction": args.test_fraction, "train_reports": len(train),
                  "test_reports": len(test), "test_with_notes": int(sum(has_notes)), "bank_sentences": len(bank)},
        "predictor": predictor_info,
        "draft": evaluate("draft (notes-only prediction)", refs, [hypothesis_text(d) for d in drafts]),
    }
    if not args.no_baselines:
        normal = make_prediction({f: float(f == "No Finding") for f in FINDINGS}, {f: 0.5 for f in FINDINGS}, None)
        constant = hypothesis_text(draft_report(normal, None, bank))
        oracle = []
        for r, i in zip(test, range(len(test))):
            truth = iu_report_labels(r["MeSH"])
            probs_true = {f: (0.0 if np.isnan(v) else float(v)) for f, v in zip(FINDINGS, truth)}
            oracle.append(hypothesis_text(draft_report(
                make_prediction(probs_true, {f: 0.5 for f in FINDINGS}, x_test[i] if has_notes[i] else None), None, bank)))
        nn = np.argmax(x_test @ x_train.T, axis=1)
        retrieval = [reference_text(train[j]) for j in nn]
        results["baselines"] = [
            evaluate("constant normal draft (same bank, no notes)", refs, [constant] * len(refs)),
            evaluate("draft from true MeSH labels (oracle labels, notes ranking)", refs, oracle),
            evaluate("nearest training report by indication embedding", refs, retrieval),
        ]
    results["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
