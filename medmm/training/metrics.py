"""Metrics, calibration and operating points on arrays (numpy only; matched against scikit-learn in tests)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit  # scipy ships with scikit-learn


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann–Whitney AUC with average ranks for ties; nan when only one class is present."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = y.sum(), (~y).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confusion_at(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, PPV, F1 at ``prob >= threshold``."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(prob) >= threshold
    tp, fp = float((pred & y).sum()), float((pred & ~y).sum())
    fn, tn = float((~pred & y).sum()), float((~pred & ~y).sum())
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    ppv = tp / (tp + fp) if tp + fp else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"sensitivity": sens, "specificity": spec, "ppv": ppv, "f1": f1}


def youden_threshold(y: np.ndarray, prob: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity − 1 (ties: the higher threshold)."""
    y = np.asarray(y).astype(bool)
    cands = np.unique(prob)
    best, best_t = -np.inf, 0.5
    for t in cands:
        c = confusion_at(y, prob, t)
        j = c["sensitivity"] + c["specificity"] - 1
        if j >= best:
            best, best_t = j, float(t)
    return best_t


def sensitivity_threshold(y: np.ndarray, prob: np.ndarray, target: float) -> float:
    """Highest threshold whose sensitivity is still >= ``target``."""
    pos = np.sort(np.asarray(prob)[np.asarray(y).astype(bool)])
    if len(pos) == 0:
        return 0.5
    k = int(np.floor((1 - target) * len(pos)))
    return float(pos[min(k, len(pos) - 1)])


def _minimise_temperature(nll) -> float:
    """T in [0.05, 20] minimising ``nll(log T)``: golden-section search on log T (the NLL is unimodal there)."""
    a, b = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(80):
        if nll(c) < nll(d):
            b = d
        else:
            a = c
        c, d = b - g * (b - a), a + g * (b - a)
    return float(np.exp((a + b) / 2))


def fit_temperature(y: np.ndarray, logits: np.ndarray) -> float:
    """Temperature T > 0 minimising the binary NLL of ``sigmoid(logit / T)`` (golden-section search on log T)."""
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)

    def nll(log_t: float) -> float:
        p = np.clip(expit(z / np.exp(log_t)), 1e-7, 1 - 1e-7)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())

    return _minimise_temperature(nll)


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """Equal-width-bin ECE."""
    y, prob = np.asarray(y, dtype=np.float64), np.asarray(prob, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(prob[m].mean() - y[m].mean())
    return float(ece)


def reliability_curve(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean predicted, observed frequency, count) per non-empty bin."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    rows = [(prob[idx == b].mean(), np.asarray(y)[idx == b].mean(), (idx == b).sum()) for b in range(bins) if (idx == b).any()]
    return tuple(np.array(c) for c in zip(*rows)) if rows else (np.array([]),) * 3  # type: ignore[return-value]


def _patient_resampler(groups: np.ndarray, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """A function drawing one bootstrap sample of row indices: patients with replacement, all rows of each."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.where(inverse == g)[0] for g in range(inverse.max() + 1)]
    return lambda: np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def binary_metrics(y: np.ndarray, prob: np.ndarray, threshold: float, *, groups: np.ndarray | None = None,
                   n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
    """AUC, F1, sensitivity, specificity at ``threshold`` with percentile bootstrap 95% CIs.

    With ``groups`` (patient ids) the bootstrap resamples patients, not images, so several images of one
    patient do not narrow the interval.
    """
    y, prob = np.asarray(y), np.asarray(prob)
    point = {"auc": roc_auc(y, prob), **confusion_at(y, prob, threshold)}
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {k: [] for k in ("auc", "f1", "sensitivity", "specificity")}
    draw = _patient_resampler(groups, rng) if groups is not None else (lambda: rng.integers(0, len(y), len(y)))
    for _ in range(n_boot):
        i = draw()
        yb, pb = y[i], prob[i]
        if yb.min() == yb.max():
            continue
        boots["auc"].append(roc_auc(yb, pb))
        c = confusion_at(yb, pb, threshold)
        for k in ("f1", "sensitivity", "specificity"):
            boots[k].append(c[k])
    out: dict[str, object] = {"n": int(len(y)), "n_positive": int(np.asarray(y).astype(bool).sum()), "threshold": float(threshold)}
    for k in ("auc", "f1", "sensitivity", "specificity"):
        vals = np.array([v for v in boots[k] if np.isfinite(v)])
        ci = [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if len(vals) else [float("nan")] * 2
        out[k] = {"value": float(point[k]), "ci95": ci}
    return out


def paired_auc_difference(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, groups: np.ndarray, *,
                          n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
    """AUC(b) - AUC(a) on the same rows, with a percentile 95 % CI from a patient-level paired bootstrap (both
    scores resampled together), so run-to-run comparisons on one set of rows are not judged by two separate CIs."""
    y, a, b = np.asarray(y), np.asarray(score_a), np.asarray(score_b)
    draw = _patient_resampler(groups, np.random.default_rng(seed))
    deltas = []
    for _ in range(n_boot):
        i = draw()
        if y[i].min() != y[i].max():
            deltas.append(roc_auc(y[i], b[i]) - roc_auc(y[i], a[i]))
    ci = [float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))] if deltas else [float("nan")] * 2
    return {"delta": float(roc_auc(y, b) - roc_auc(y, a)), "ci95": ci}


def fit_state_temperature(state_logits: np.ndarray, allowed: np.ndarray) -> float:
    """One temperature for a softmax over states, minimising the partial-label NLL (golden-section on log T)."""
    z = np.asarray(state_logits, dtype=np.float64)
    ok = np.asarray(allowed, bool)
    keep = ~ok.all(1) & np.isfinite(z).all(1)
    z, ok = z[keep], ok[keep]
    if not len(z):
        return 1.0

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        m = s.max(1, keepdims=True)
        lse = np.log(np.exp(s - m).sum(1)) + m[:, 0]
        lse_ok = np.log((np.exp(s - m) * ok).sum(1).clip(1e-300)) + m[:, 0]
        return float((lse - lse_ok).mean())

    return _minimise_temperature(nll)


def specificity_threshold(y: np.ndarray, prob: np.ndarray, target: float) -> float:
    """Lowest threshold whose specificity (``prob < threshold`` among negatives) is still >= ``target``."""
    neg = np.sort(np.asarray(prob)[~np.asarray(y).astype(bool)])
    if len(neg) == 0:
        return 0.5
    k = min(int(np.ceil(target * len(neg))), len(neg)) - 1
    return float(np.nextafter(neg[max(k, 0)], np.inf))
