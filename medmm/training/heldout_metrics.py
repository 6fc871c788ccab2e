"""The metrics tables of a training run, on held-out predictions (out-of-fold, and the left-out sources of
leave-one-source-out): AUC / F1 / sensitivity / specificity per finding and per source with patient-bootstrap 95%
CIs and ECE, the modality comparison on the COVID collection, and a TF-IDF baseline on the notes. (A saved
checkpoint scored on a manifest is ``evaluate``.)"""

from __future__ import annotations

import numpy as np

from medmm.labels import FINDINGS, marginals
from medmm.sources import NIH_SOURCES
from medmm.training.calibration import state_probs
from medmm.training.data import Record, label_matrix
from medmm.training.metrics import binary_metrics, expected_calibration_error, roc_auc


def finding_metrics(labels: np.ndarray, groups: np.ndarray, mask: np.ndarray, j: int, p: np.ndarray,
                    threshold: float, folds: np.ndarray | None = None, score: np.ndarray | None = None) -> dict | None:
    """Metrics of finding ``j`` on ``mask`` (AUC of ``score`` when given, e.g. 1 - p(No Finding))."""
    m = mask & ~np.isnan(labels[:, j]) & ~np.isnan(p)
    if m.sum() < 10 or len(np.unique(labels[m, j])) < 2:
        return None
    out = binary_metrics(labels[m, j], p[m], threshold, groups=groups[m])
    if score is not None:
        out["auc"] = binary_metrics(labels[m, j], score[m], 0.5, groups=groups[m])["auc"]
    if folds is not None:
        per_fold = [roc_auc(labels[m & (folds == k), j], p[m & (folds == k)]) for k in np.unique(folds)]
        per_fold = [a for a in per_fold if np.isfinite(a)]
        if per_fold:
            out["auc_folds_mean"], out["auc_folds_std"] = float(np.mean(per_fold)), float(np.std(per_fold))
    out["ece"] = expected_calibration_error(labels[m, j], p[m])
    return out


def source_metrics(records: list[Record], probs: np.ndarray, thresholds: dict, folds: np.ndarray | None = None) -> dict:
    """Per image source and finding: AUC, sensitivity/specificity at the stored thresholds, ECE."""
    labels = label_matrix(records)
    groups = np.array([r.patient_id for r in records])
    sources = np.array([r.source for r in records])
    has_image = np.array([r.image is not None for r in records])
    out: dict = {}
    for s in sorted(set(sources)):
        m = (sources == s) & has_image
        if not m.any():
            continue
        out[s] = {f: finding_metrics(labels, groups, m, j, probs[:, j], thresholds[f], folds)
                  for j, f in enumerate(FINDINGS)}
        # normal vs any abnormality, scored by 1 - p(No Finding): what an adult screening question asks
        nf = FINDINGS.index("No Finding")
        abnormal = (1 - labels[:, nf])[:, None]
        out[s]["abnormal_vs_normal"] = finding_metrics(abnormal, groups, m, 0, 1 - probs[:, nf],
                                                       1 - thresholds["No Finding"], folds)
    return out

def tfidf_baseline(records: list[Record], folds: np.ndarray, finding: str = "COVID-19", source: str = "covid") -> np.ndarray:
    """Out-of-fold TF-IDF + logistic regression on the notes of ``source`` (same folds): the bag-of-words anchor."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    j = FINDINGS.index(finding)
    labels = label_matrix(records)
    rows = np.array([r.source == source and r.notes is not None and not np.isnan(r.labels[j]) for r in records])
    out = np.full(len(records), np.nan)
    notes = np.array([r.notes or "" for r in records], dtype=object)
    for k in np.unique(folds):
        tr, va = rows & (folds != k), rows & (folds == k)
        if va.sum() == 0 or len(np.unique(labels[tr, j])) < 2:
            continue
        clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                            LogisticRegression(C=10.0, max_iter=2000))
        clf.fit(list(notes[tr]), labels[tr, j])
        out[va] = clf.predict_proba(list(notes[va]))[:, 1]
    return out


def evaluate_oof(records: list[Record], folds: np.ndarray, oof: dict[str, np.ndarray], temperature: float,
                 thresholds: dict, probs: np.ndarray) -> dict:
    """Per-finding metrics with patient-bootstrap CIs, per-fold mean ± std, per source, modality comparison."""
    labels = label_matrix(records)
    groups = np.array([r.patient_id for r in records])
    sources = np.array([r.source for r in records])
    everyone = np.ones(len(records), bool)
    result: dict = {"findings": {f: finding_metrics(labels, groups, everyone, j, probs[:, j], thresholds[f], folds)
                                 for j, f in enumerate(FINDINGS)},
                    "sources": source_metrics(records, probs, thresholds, folds), "subsets": {}}
    pj, cj = FINDINGS.index("Pneumonia"), FINDINGS.index("COVID-19")
    result["subsets"]["kermany_pneumonia_vs_normal_image_only"] = finding_metrics(
        labels, groups, sources == "kermany", pj, probs[:, pj], thresholds["Pneumonia"], folds)
    # COVID collection with notes: image-only vs notes-only vs both vs TF-IDF (same rows, same folds)
    both = (sources == "covid") & np.array([r.notes is not None and r.image is not None for r in records])
    for cond in ("full", "image_only", "notes_only"):
        p = marginals(state_probs(oof[cond], temperature))[:, cj]
        result["subsets"][f"covid_with_notes_covid19_{cond}"] = finding_metrics(labels, groups, both, cj, p,
                                                                                 thresholds["COVID-19"], folds)
    tfidf = tfidf_baseline(records, folds)
    result["subsets"]["covid_with_notes_covid19_tfidf_baseline"] = finding_metrics(labels, groups, both, cj, tfidf,
                                                                                   0.5, folds)
    adult = np.isin(sources, NIH_SOURCES) & ~np.isnan(probs[:, cj])
    if adult.any():
        result["subsets"]["covid19_called_among_adult_non_covid"] = {
            "n": int(adult.sum()), "rate": float((probs[adult, cj] >= thresholds["COVID-19"]).mean())}
    return result

def short_aucs(res: dict, prefix: str = "") -> str:
    """``"kermany/Pneumonia AUC 0.912, ..."``: the AUCs of a (nested) metrics table on one line, for the log."""
    parts = []
    for key, blk in res.items():
        if isinstance(blk, dict) and isinstance(blk.get("auc"), dict):
            parts.append(f"{prefix}{key} AUC {blk['auc']['value']:.3f}")
        elif isinstance(blk, dict):
            parts.append(short_aucs(blk, f"{key}/"))
    return ", ".join(p for p in parts if p)

