"""Calibration and operating points, fitted on out-of-fold predictions: the state temperature, the per-finding
thresholds (a sensitivity target; COVID-19 also a specificity floor on adult non-COVID films), the notes expert's
starting weight, and the adult-scope check on image embeddings."""

from __future__ import annotations

import numpy as np

from medmm.labels import FINDINGS, marginals
from medmm.models.checkpoint import ScopeCheck
from medmm.sources import CHILD_SOURCES, NIH_SOURCES
from medmm.training.metrics import fit_state_temperature, sensitivity_threshold, specificity_threshold


def state_probs(state_logits: np.ndarray, temperature: float) -> np.ndarray:
    z = state_logits / temperature
    z = z - np.max(np.nan_to_num(z, nan=0.0), axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def calibrate(state_logits: np.ndarray, allowed: np.ndarray, folds: np.ndarray) -> tuple[float, np.ndarray]:
    """One state temperature (all OOF rows) and cross-fitted finding probabilities ``[N, F]``.

    Cross-fitting: fold k's probabilities use a temperature fitted on the other folds, so the reported ECE is
    not measured on the data the temperature was fitted to.
    """
    temperature = fit_state_temperature(state_logits, allowed)
    probs = np.full((len(state_logits), len(FINDINGS)), np.nan, np.float32)
    for k in np.unique(folds):
        m, other = folds == k, folds != k
        t_k = fit_state_temperature(state_logits[other], allowed[other])
        probs[m] = marginals(state_probs(state_logits[m], t_k))
    return temperature, probs


def choose_thresholds(probs: np.ndarray, labels: np.ndarray, sources: np.ndarray, target_sensitivity: float,
                      adult_specificity: float, reference: str | None = "kermany") -> tuple[dict[str, float], dict[str, str]]:
    """Per finding: the highest threshold that keeps ``target_sensitivity`` on out-of-fold predictions.

    The operating point is set on the ``reference`` source (the population the model is built for, pediatric
    Kermany) when it has at least 20 positives and 20 negatives for the finding, else on every source pooled: a
    pooled threshold is dragged down by the harder adult films and then gives away specificity on children.
    COVID-19 also needs ``adult_specificity`` among adult non-COVID films (the NIH sets, all pre-2020): without it, a
    threshold chosen where COVID-19 is trivially separable from children calls adults COVID-19.
    """
    thresholds, rules = {}, {}
    adult_non_covid = np.isin(sources, NIH_SOURCES)
    for j, f in enumerate(FINDINGS):
        known = ~np.isnan(labels[:, j]) & ~np.isnan(probs[:, j])
        ref = known & (sources == reference)
        where = "all sources pooled"
        if reference and min((labels[ref, j] == 1).sum(), (labels[ref, j] == 0).sum()) >= 20:
            known, where = ref, f"{reference} films"
        y, p = labels[known, j], probs[known, j]
        if len(np.unique(y)) < 2:
            thresholds[f], rules[f] = 0.5, "default 0.5 (a single class in training)"
            continue
        t = sensitivity_threshold(y, p, target_sensitivity)
        rules[f] = f"sensitivity >= {target_sensitivity:g} on out-of-fold predictions ({where})"
        adult = adult_non_covid & ~np.isnan(labels[:, j]) & ~np.isnan(probs[:, j])
        if f == "COVID-19" and adult.sum() >= 20:
            t_adult = specificity_threshold(np.zeros(adult.sum()), probs[adult, j], adult_specificity)
            if t_adult > t:
                t, rules[f] = t_adult, f"specificity >= {adult_specificity:g} among adult non-COVID films (NIH, out-of-fold)"
        thresholds[f] = float(t)
    return thresholds, rules


def expert_slope(features: np.ndarray, y: np.ndarray) -> float:
    """Logistic slope of the notes expert's cross-fitted word evidence against the labels: the log-odds per unit of
    evidence it earns on rows it never saw (its own fit is overconfident in-sample, cross-fitted it is not). The
    fusion adds ``expert_weight x evidence`` to the finding's state, so this is the weight that starts it
    calibrated instead of at an arbitrary 1.0 (where the rest of the notes pathway, trained jointly, drowned it:
    measured on the previous checkpoint's out-of-fold logits, MODEL_CARD)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, float)
    if len(np.unique(y)) < 2:
        return 1.0
    clf = LogisticRegression(C=1e4, max_iter=1000).fit(np.asarray(features, float).reshape(-1, 1), y)
    return float(max(clf.coef_[0, 0], 0.0))


def fit_scope(embeddings: np.ndarray, sources: np.ndarray, groups: np.ndarray) -> tuple[ScopeCheck, dict[str, float]]:
    """Adult-vs-pediatric logistic regression on image embeddings; the rate it fires per source (grouped CV)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict

    adult = (~np.isin(sources, CHILD_SOURCES)).astype(int)
    clf = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced")
    if len(np.unique(adult)) < 2:
        return ScopeCheck.constant(embeddings.shape[1], bool(adult[0])), {}
    n_splits = min(5, len(np.unique(groups)))
    p = cross_val_predict(clf, embeddings, adult, groups=groups, cv=GroupKFold(n_splits), method="predict_proba")[:, 1]
    clf.fit(embeddings, adult)
    rates = {s: float((p[sources == s] >= 0.5).mean()) for s in sorted(set(sources))}
    return ScopeCheck(clf.coef_[0].astype(np.float32), float(clf.intercept_[0])), rates

