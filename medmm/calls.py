"""From probabilities to calls and words: one rule for every output (the table, the draft, the JSON, the DICOM SR).

What
----
* ``decide(findings, thresholds, scope, population, tested)`` -> ``(calls, warnings)``: one ``Call`` per finding
  (called or not, its band, and why a value at or above its threshold is not called).
* ``Call.label``: the operating table's word; ``statement(call, image)``: the draft's sentence. Both read only
  the call, so the table, the draft, the JSON and the SR cannot disagree.
* ``load_scope(folder)``: the checkpoint's scope table (``scope.csv`` beside ``medmm.json``): population x
  finding -> may it be called, with the measured figure that says so. ``scripts/scope_table.py`` writes it from a
  run's out-of-fold predictions by a criterion stated there; a better model widens it by changing data.

The rule, stated once
---------------------
1. **Scope.** A finding the scope table marks ``no`` for the request's population is *not assessed* (its
   probability is shown, it is never called, its reason is the measured figure). ``with test``: called only when
   the notes carry a counted test result for it (COVID-19: the image alone separates sources, not diseases).
2. **Hierarchy.** A subtype is called only when its parent is; "No Finding" only when no abnormality is at or
   above its threshold.
3. **Subtypes.** Siblings share their parent's probability. The leading sibling is called when it is at or above
   its threshold *and* its share of the parent exceeds every other sibling's share by ``SUBTYPE_MARGIN``; when
   siblings are at or above threshold and none leads by that margin, the subtype is *indeterminate*.
4. **Bands** (the same for every finding): called -> ``likely`` from ``LIKELY_AT``, else ``possible``; not
   called with a probability at or above the threshold -> ``withheld`` (always with a reason); below the
   threshold -> ``uncertain`` from ``UNLIKELY_BELOW``, else ``unlikely``. Words only move one band at a time as
   the probability rises, and only ``unlikely`` may say the model found no evidence.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from medmm.labels import FINDINGS, NORMAL_FINDING, _BY_NAME, children

LIKELY_AT = 0.80          # a called finding is "likely" from here, "possible" below
UNLIKELY_BELOW = 0.20     # below this (and below its threshold) a finding is "unlikely"; above, "uncertain"
SUBTYPE_MARGIN = 0.20     # a subtype leads when its share of the parent beats each sibling's by this much
SCOPE_FILE = "scope.csv"
POPULATIONS = ("child", "adult", "no image")
CALL_VALUES = ("yes", "no", "with test")

CALLED_BANDS = ("possible", "likely")
NOT_CALLED_BANDS = ("unlikely", "uncertain", "withheld", "not assessed")

# short reasons (the table) for a finding not called although at or above its threshold, or out of scope
R_SCOPE = "not assessed"
R_PARENT = "parent not called"
R_COMPETING = "competing subtype"
R_INDETERMINATE = "subtype indeterminate"
R_ABNORMAL = "abnormal finding above threshold"
R_TEST = "needs a test result"
R_NOT_CALLED = "not called"   # a prediction built without calls (by hand) that leaves it out of ``positive``


@dataclass(frozen=True)
class ScopeRule:
    """One row of the scope table: may ``finding`` be called for ``population``, and the figure that says so."""

    population: str
    finding: str
    call: str                    # "yes" | "no" | "with test"
    metric: str = ""             # e.g. "AUC (out-of-fold, unseen patients)"
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    n_positive: int | None = None
    measured_on: str = ""
    note: str = ""

    def figure(self) -> str:
        """``"out-of-fold AUC 0.74 (95% CI 0.67-0.80; 299 films, 50 positive; unseen NIH patients ...)"``, or the
        note when nothing was measured."""
        if self.value is None:
            return self.note
        parts = [f"95% CI {self.ci_low:.2f} to {self.ci_high:.2f}" if self.ci_low is not None else "",
                 f"{self.n:,} films, {self.n_positive:,} positive" if self.n is not None else "", self.measured_on]
        return f"{self.metric} {self.value:.2f} ({'; '.join(p for p in parts if p)})"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


Scope = Mapping[tuple[str, str], ScopeRule]


def load_scope(folder: str | Path) -> dict[tuple[str, str], ScopeRule]:
    """The scope table beside a checkpoint (``{}``, everything in scope, when the checkpoint has none)."""
    path = Path(folder) / SCOPE_FILE
    if not path.is_file():
        return {}
    out: dict[tuple[str, str], ScopeRule] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rule = ScopeRule(
                population=row["population"], finding=row["finding"], call=row["call"], metric=row.get("metric", ""),
                value=_num(row.get("value")), ci_low=_num(row.get("ci_low")), ci_high=_num(row.get("ci_high")),
                n=_int(row.get("n")), n_positive=_int(row.get("n_positive")),
                measured_on=row.get("measured_on", ""), note=row.get("note", ""))
            if rule.population not in POPULATIONS or rule.finding not in FINDINGS or rule.call not in CALL_VALUES:
                raise ValueError(f"{path}: bad scope row {row}")
            out[(rule.population, rule.finding)] = rule
    return out


def _num(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def _int(text: str | None) -> int | None:
    return int(float(text)) if text not in (None, "") else None


@dataclass(frozen=True)
class Call:
    """One finding's output: probability, threshold, whether it is called, its band and why (when not called)."""

    finding: str
    probability: float
    threshold: float
    called: bool
    band: str                    # "likely" | "possible" | "withheld" | "uncertain" | "unlikely" | "not assessed"
    reason: str = ""             # short: R_SCOPE, R_PARENT, R_COMPETING, ... ("" when nothing needs saying)
    detail: str = ""             # the sentence behind the reason (the figure for out of scope)

    @property
    def in_scope(self) -> bool:
        return self.band != "not assessed"

    @property
    def label(self) -> str:
        """The operating table's word: ``YES (likely)``, ``no: competing subtype``, ``not assessed``, ``no``."""
        if self.called:
            return f"YES ({self.band})"
        if not self.in_scope:
            return f"not assessed ({self.reason})" if self.reason != R_SCOPE else "not assessed"
        if self.band == "withheld":
            return f"no: {self.reason}"
        return f"no ({self.band})"

    def to_dict(self) -> dict[str, Any]:
        return {"finding": self.finding, "probability": self.probability, "threshold": self.threshold,
                "called": self.called, "band": self.band, "reason": self.reason, "detail": self.detail}


def band_of(probability: float, threshold: float, called: bool) -> str:
    """The band of an in-scope finding (the same cuts for every finding)."""
    if called:
        return "likely" if probability >= LIKELY_AT else "possible"
    if probability >= threshold:
        return "withheld"
    return "uncertain" if probability >= UNLIKELY_BELOW else "unlikely"


def _name(finding: str) -> str:
    return _BY_NAME[finding].report_name


def _out_of_scope(rule: ScopeRule | None, finding: str, tested: set[str]) -> tuple[str, str] | None:
    """(reason, detail) when the scope table keeps ``finding`` from being called for the rule's population."""
    if rule is None or rule.call == "yes" or (rule.call == "with test" and finding in tested):
        return None
    if rule.call == "with test":
        return R_TEST, (f"{finding} is not called from the image alone ({rule.figure()}); it is called only with a "
                        "test result in the notes.")
    who = {"child": "children's films", "adult": "adult films", "no image": "the notes alone"}[rule.population]
    return R_SCOPE, f"{finding} is not assessed on {who}: {rule.figure()}."


def _call(finding: str, p: float, t: float, called: bool, reason: str, detail: str) -> Call:
    """The ``Call``: out of scope -> "not assessed"; else its band, the reason kept only when it is "withheld"."""
    if reason in (R_SCOPE, R_TEST):
        return Call(finding, p, t, False, "not assessed", reason, detail)
    band = band_of(p, t, called)
    return Call(finding, p, t, called, band, *((reason, detail) if band == "withheld" else ("", "")))


def decide(findings: Mapping[str, float], thresholds: Mapping[str, float], scope: Scope | None = None,
           population: str | None = None, tested: Iterable[str] = ()) -> tuple[tuple[Call, ...], list[str]]:
    """One ``Call`` per finding (``FINDINGS`` order; findings missing or not finite get none) and the warnings that
    explain what was withheld.

    ``population``: "child" | "adult" | "no image" (the scope table's rows); ``tested``: findings for which the notes
    carry a counted test result (the ``with test`` rows)."""
    scope, tested = scope or {}, set(tested)
    known = [f for f in FINDINGS if f in findings and f in thresholds
             and math.isfinite(float(findings[f])) and math.isfinite(float(thresholds[f]))]
    p = {f: float(findings[f]) for f in known}
    t = {f: float(thresholds[f]) for f in known}
    above = {f for f in known if p[f] >= t[f]}
    called: set[str] = set()
    why: dict[str, tuple[str, str]] = {}
    warnings: list[str] = []

    for f in known:
        o = _out_of_scope(scope.get((population, f)) if population else None, f, tested)
        if o is not None:
            why[f] = o

    def visit(parent: str | None) -> None:
        kids = [k for k in children(parent) if k in p]
        cands = [k for k in kids if k in above]
        if not cands:
            return
        share = {k: p[k] / max(p[parent], 1e-9) if parent else p[k] for k in kids}
        top = max(kids, key=lambda k: share[k])
        runner_up = max((share[k] for k in kids if k != top), default=0.0)
        leads = len(kids) < 2 or share[top] - runner_up >= SUBTYPE_MARGIN
        if leads:
            if top in above and top not in why:
                called.add(top)
            for k in cands:
                if k != top:
                    why.setdefault(k, (R_COMPETING, f"{k} is at or above its threshold, but {top} leads "
                                       f"({share[top]:.2f} vs {share[k]:.2f} of {parent})."))
            if top in called:
                visit(top)
            return
        in_scope_cands = [k for k in cands if k not in why]
        if in_scope_cands:
            shares = ", ".join(f"{_name(k)} {share[k]:.2f}" for k in kids)
            what = f"{_name(parent)} subtype" if parent else "Finding"
            warnings.append(f"{what[0].upper()}{what[1:]} indeterminate: no subtype leads by {SUBTYPE_MARGIN:.2f} "
                            f"of the {_name(parent) if parent else 'film'} probability ({shares}), so none is "
                            "named.")
            for k in in_scope_cands:
                why[k] = (R_INDETERMINATE, f"{k} is at or above its threshold but does not lead its siblings by "
                                           f"{SUBTYPE_MARGIN:.2f} ({shares}).")

    visit(None)
    for f in known:
        parent = _BY_NAME[f].parent
        if f in above and f not in called and f not in why and parent is not None and parent not in called:
            why[f] = (R_PARENT, f"{f} is at or above its threshold but {parent} is not called.")
    if NORMAL_FINDING in above and NORMAL_FINDING not in why:
        abnormal = [f for f in known if f != NORMAL_FINDING and f in above]
        if abnormal:
            why[NORMAL_FINDING] = (R_ABNORMAL, f"{NORMAL_FINDING} is at or above its threshold next to "
                                               f"{', '.join(abnormal)}: the model is uncertain.")
            if any(f in called for f in abnormal):
                warnings.append(f"{NORMAL_FINDING} also crossed its threshold next to "
                                f"{', '.join(f for f in abnormal if f in called)}: the model is uncertain; the "
                                "abnormal finding is shown.")
        else:
            called.add(NORMAL_FINDING)
    calls = [_call(f, p[f], t[f], f in called, *why.get(f, ("", ""))) for f in known]
    return tuple(calls), warnings


# ------------------------------------------------------------------------------------------------ words
def _p(prob: float) -> str:
    return f"(model probability {prob:.2f})"


def _thr(prob: float, threshold: float) -> str:
    digits = 2 if f"{prob:.2f}" != f"{threshold:.2f}" else 3  # never "0.98 (threshold 0.98)"
    return f"(model probability {prob:.{digits}f}, threshold {threshold:.{digits}f})"


T_NORMAL_MODELLED = "Normal study for the findings this model assesses"
T_NF_NEGATIVE = ("The model does not classify this study as normal; review the image for findings outside the "
                 "modelled set.")


def statement(call: Call, image: bool = True) -> str:
    """The draft's sentence for one call. Only the ``unlikely`` band says that the model found no evidence; a
    finding not called at or above its threshold says why; an out-of-scope finding says what was measured."""
    f, prob, band = call.finding, call.probability, call.band
    if band == "not assessed":
        return call.detail
    if f == NORMAL_FINDING:
        if band == "likely":
            return f"{T_NORMAL_MODELLED} (No Finding, model probability {prob:.2f})."
        if band == "possible":
            return f"Possibly a normal study {_p(prob)}."
        return T_NF_NEGATIVE
    phrase = _name(f)
    cap = phrase[0].upper() + phrase[1:]
    if band == "likely":
        return (f"Findings consistent with pneumonia {_p(prob)}." if f == "Pneumonia"
                else f"Pattern consistent with {phrase} {_p(prob)}.")
    if band == "possible":
        return f"{cap} cannot be excluded {_p(prob)}."
    if band == "withheld":
        why = {R_COMPETING: "another subtype leads by its share of the pneumonia probability",
               R_PARENT: "no pneumonia is called", R_INDETERMINATE: "the subtypes cannot be told apart"}
        return f"No {phrase} is named {_thr(prob, call.threshold)}: {why.get(call.reason, call.reason)}."
    if band == "uncertain":
        return f"No {phrase} is called at the model's operating point {_thr(prob, call.threshold)}; review the image."
    where = ("radiographic evidence of pneumonia" if image else "evidence of pneumonia from the available inputs") \
        if f == "Pneumonia" else f"specific features of {phrase}"
    return f"No {where} {_p(prob)}."


def calls_by_name(calls: Iterable[Call]) -> dict[str, Call]:
    return {c.finding: c for c in calls}


__all__ = ["CALLED_BANDS", "Call", "LIKELY_AT", "NOT_CALLED_BANDS", "POPULATIONS", "SCOPE_FILE", "SUBTYPE_MARGIN",
           "ScopeRule", "UNLIKELY_BELOW", "band_of", "calls_by_name", "decide", "load_scope", "statement"]
