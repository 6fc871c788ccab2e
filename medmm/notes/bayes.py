"""Bayes' rule on the image model's mutually exclusive states: the notes' log likelihood ratios update Pneumonia's
odds against everything else, then each subtype's odds within pneumonia; the findings are sums of states again.
Also the pre-test states of a notes-only request, and each evidence item's leave-one-out effect on a finding."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from medmm.labels import FINDINGS, LEAF_MATRIX, NORMAL_FINDING, ancestors
from medmm.notes.families import apply_families
from medmm.notes.tables import pretest_table

if TYPE_CHECKING:
    from medmm.notes.evidence import Evidence, NotesEvidence

ROOT = "Pneumonia"           # the finding every subtype update is conditioned on
_F = {f: i for i, f in enumerate(FINDINGS)}
_ROOT_STATES = LEAF_MATRIX[:, _F[ROOT]].astype(bool)


def update_states(states: np.ndarray, log_lr: dict[str, float]) -> np.ndarray:
    """Bayes' rule on the six mutually exclusive states ``[..., L]``: ROOT's odds against all other states, then
    each subtype's odds within ROOT (findings in FINDINGS order, i.e. parents first)."""
    p = np.asarray(states, dtype=np.float64).copy()
    for finding in FINDINGS:
        llr = log_lr.get(finding, 0.0)
        if not llr:
            continue
        inside = LEAF_MATRIX[:, _F[finding]].astype(bool)
        scope = np.ones_like(inside) if finding == ROOT or ROOT not in ancestors(finding) else _ROOT_STATES
        mass = p[..., scope].sum(-1, keepdims=True)
        w = np.where(inside & scope, p * math.exp(llr), np.where(scope, p, 0.0))
        total = w[..., scope].sum(-1, keepdims=True)
        scaled = np.where(total > 0, w * mass / np.where(total > 0, total, 1.0), w)
        p = np.where(scope, scaled, p)
    return p / p.sum(-1, keepdims=True)


def pretest_states(population: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The state distribution a notes-only request starts from: P(pneumonia) from ``pretest.csv`` for the
    population; no information on anything else (pneumonia's mass split evenly over its subtypes, the rest evenly
    over normal and other abnormality: the notes cannot see a film)."""
    row = pretest_table().get((population, ROOT)) or pretest_table()[("adult", ROOT)]
    pi = row["probability"]
    n_in, n_out = int(_ROOT_STATES.sum()), int((~_ROOT_STATES).sum())
    states = np.where(_ROOT_STATES, pi / n_in, (1 - pi) / n_out)
    return states, {"population": population, **row}


def marginals(states: np.ndarray) -> np.ndarray:
    return np.asarray(states) @ LEAF_MATRIX


def _log_lr_without(evidence: NotesEvidence, drop: int | None) -> dict[str, float]:
    if drop is None:
        return evidence.log_lr
    rest = [replace(e, counted=True) if e.used and e.lr else e
            for i, e in enumerate(evidence.items) if i != drop]                     # the families decide again
    return apply_families(rest)[1]


def logit(p: float) -> float:
    """log(p / (1 - p)), p clamped to [1e-12, 1 - 1e-12] (a finding at 0 or 1 still has a direction)."""
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def finding_shift(log_lr: dict[str, float], finding: str) -> float:
    """The log-odds shift of ``finding`` for a model with independent findings (no states): its own log
    likelihood ratio and its ancestors' (a subtype moves with its parent); No Finding moves against Pneumonia
    (exact when No Finding is everything but pneumonia: its odds are then pneumonia's inverted)."""
    if finding == NORMAL_FINDING:
        return -log_lr.get(ROOT, 0.0)
    return sum(log_lr.get(a, 0.0) for a in (finding, *ancestors(finding)))


def item_effects(prior_states: np.ndarray | None, evidence: NotesEvidence,
                 finding: str) -> list[tuple[Evidence, float]]:
    """Each evidence item's effect on ``finding``'s log-odds: with everything, minus without that item (exact
    for a lone item; with several, the family rule and the cap make effects non-additive, so each is its own
    leave-one-out). Items not used have effect 0. ``prior_states``: the states the evidence updated (image or
    pre-test); None for a model with independent findings, whose log-odds move by ``finding_shift``."""
    j = _F[finding]

    def value(drop: int | None) -> float:
        log_lr = _log_lr_without(evidence, drop)
        if prior_states is None:
            return finding_shift(log_lr, finding)
        return logit(float(marginals(update_states(prior_states, log_lr))[j]))

    full = value(None)
    return [(e, full - value(i) if e.used else 0.0) for i, e in enumerate(evidence.items)]
