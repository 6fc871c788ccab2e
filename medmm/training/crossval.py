"""Held-out evaluation of a run: patient-grouped, label-stratified k-fold cross-validation (out-of-fold state logits
for the full input and, where both exist, image-only and notes-only; the temperature and thresholds are fitted on
them), and leave-one-source-out (train without each image source, both NIH sets counting as one hospital, and test
on it at the cross-validated temperature and thresholds)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from medmm.labels import FINDINGS, LEAF_NAMES, allowed_states, marginals
from medmm.training.calibration import calibrate, choose_thresholds, state_probs
from medmm.training.data import leave_one_source_out, patient_folds
from medmm.training.heldout_metrics import evaluate_oof, finding_metrics, short_aucs, source_metrics
from medmm.training.metrics import roc_auc
from medmm.training.run import Run

log = logging.getLogger("medmm.train")


@dataclass(frozen=True)
class CrossValidation:
    """What cross-validation hands the final model: its metrics and the operating point fitted out of fold."""

    metrics: dict = field(default_factory=dict)
    temperature: float = 1.0
    thresholds: dict[str, float] = field(default_factory=lambda: {f: 0.5 for f in FINDINGS})
    rules: dict[str, str] = field(default_factory=lambda: {f: "default 0.5 (no cross-validation)" for f in FINDINGS})
    energy: list[dict] = field(default_factory=list)  # per fold


def cross_validate(run: Run) -> CrossValidation:
    """k-fold patient-grouped CV -> metrics, temperature, thresholds, threshold rules, energy per fold."""
    cfg, records = run.cfg, run.records
    folds = patient_folds(records, cfg.folds, cfg.seed)
    oof = {c: np.full((len(records), len(LEAF_NAMES)), np.nan, np.float32) for c in ("full", "image_only", "notes_only")}
    energy = []
    pj = FINDINGS.index("Pneumonia")
    for k in range(cfg.folds):
        val_idx, train_idx = np.where(folds == k)[0], np.where(folds != k)[0]
        preds, e = run.fit_and_predict(f"fold{k}", train_idx, val_idx, f"fold {k + 1}/{cfg.folds}")
        for c in oof:
            oof[c][val_idx] = preds[c]
        energy.append(e)
        p = marginals(state_probs(preds["full"], 1.0))[:, pj]
        known = ~np.isnan(run.labels[val_idx, pj])
        log.info("fold %d: Pneumonia AUC %.4f (%d val records), energy %.0f J (%s)", k,
                 roc_auc(run.labels[val_idx, pj][known], p[known]), len(val_idx), e["joules"], e["method"])
    allowed = allowed_states(run.labels)
    temperature, probs = calibrate(oof["full"], allowed, folds)
    thresholds, rules = choose_thresholds(probs, run.labels, run.sources, cfg.target_sensitivity, cfg.adult_specificity)
    metrics = evaluate_oof(records, folds, oof, temperature, thresholds, probs)
    metrics.update(folds=cfg.folds, temperature=temperature)
    if run.rank == 0:
        np.savez(run.out / "oof.npz", folds=folds, labels=run.labels, probs=probs, sources=run.sources,
                 patients=np.array([r.patient_id for r in records]), **oof)
    return CrossValidation(metrics, temperature, thresholds, rules, energy)


def leave_sources_out(run: Run, temperature: float, thresholds: dict) -> dict:
    """Train without each image source, test on it; metrics at the stored temperature and thresholds."""
    results = {}
    for source, train_idx, test_idx in leave_one_source_out(run.records):
        preds, energy = run.fit_and_predict(f"loso_{source}", train_idx, test_idx, f"without {source}",
                                            loso_epochs=run.config.loso_epochs)
        probs = np.full((len(run.records), len(FINDINGS)), np.nan, np.float32)
        probs[test_idx] = marginals(state_probs(preds["full"], temperature))
        results[source] = {s: res for s, res in source_metrics(run.records, probs, thresholds).items()
                           if s in set(run.sources[test_idx])}
        results[source]["trained_on"] = sorted(str(s) for s in set(run.sources[train_idx]))
        if source == "covid":
            cj = FINDINGS.index("COVID-19")
            labels, groups = run.labels, np.array([r.patient_id for r in run.records])
            both = (run.sources == "covid") & np.array([r.notes is not None for r in run.records])
            for cond in ("full", "image_only", "notes_only"):
                p = np.full(len(run.records), np.nan)
                p[test_idx] = marginals(state_probs(preds[cond], temperature))[:, cj]
                results[source][f"covid19_with_notes_{cond}"] = finding_metrics(labels, groups, both, cj, p,
                                                                                thresholds["COVID-19"])
        log.info("left out %s: %s", source, short_aucs(results[source]))
    return results
