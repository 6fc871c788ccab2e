"""Clinical concepts -> evidence with published strength -> a Bayes update of the image's answer, in one place.

``likelihood_ratios.csv`` (next to this file) has one row per concept x finding x population with the likelihood
ratio for the concept's presence (``lr_pos``) and absence (``lr_neg``), its source, the words of the source that
carry the number, and ``use`` (``no`` rows document what was found and not used, and why). ``pretest.csv`` holds
the pre-test probabilities a notes-only request starts from.

The fusion rule (``combine`` then ``update_states``):

* a concept is evidence only when the note asserts it about this patient now (present or absent); possible,
  historical, hypothetical concepts and those about someone else are shown and not used;
* present -> LR+, absent -> LR-; a measured value is compared with the row's threshold (SpO2 88 % with a
  threshold of 96 is hypoxaemia present; 99 % is its absence);
* children take the child row; a concept with no child row at all takes the adult row, flagged as such (a child
  row marked ``use=blocked`` stops that: the pediatric review found no association; measured vital signs never
  take an adult cut-off);
* correlated concepts are not multiplied blindly: concepts are grouped into families (``FAMILIES``: fever and a
  measured temperature; the respiratory history; the vital signs; the chest examination; laboratory tests; ...);
  in each family only the strongest raising and the strongest lowering concept count; the families' clinical total
  is capped at an LR of 10 either way (``CLINICAL_CAP``; stated a priori, not fitted: no labelled notes with
  symptoms exist here to fit it); test results (SARS-CoV-2, influenza) are added outside the cap;
* the image model's six mutually exclusive states are updated by Bayes' rule: Pneumonia's odds against everything
  else, then each subtype's odds *within pneumonia* (a positive SARS-CoV-2 test makes a pneumonia more likely to be
  COVID-19; it does not make a clear film show pneumonia). The findings are then sums of states again, so the
  hierarchy (subtype <= pneumonia, No Finding + Pneumonia <= 1) holds by construction.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from medmm.labels import FINDINGS, LEAF_MATRIX, NORMAL_FINDING, ancestors
from medmm.notes.reader import (ABSENT, CONTEXT_CONCEPTS, PRESENT, Concept, NoteReading)

CLINICAL_CAP = math.log(10.0)
ROOT = "Pneumonia"           # the finding every subtype update is conditioned on

# family -> concepts; the strongest raising and the strongest lowering concept of a family count
FAMILIES: dict[str, tuple[str, ...]] = {
    "fever": ("fever", "temperature_high"),
    "systemic": ("chills", "myalgia"),
    "respiratory history": ("cough", "productive_cough", "dyspnea", "chest_pain", "sore_throat", "rhinorrhea"),
    # temperature, respiratory and heart rate: the three Marchello's "normal vital signs" rule combines
    "vital signs": ("tachypnea", "tachycardia", "normal_vital_signs", "normal_vitals_and_lung_exam"),
    "oxygenation": ("hypoxemia",),
    "chest examination": ("crackles", "decreased_breath_sounds", "dullness_percussion", "egophony",
                          "bronchial_breath_sounds", "increased_work_of_breathing", "normal_vitals_and_lung_exam"),
    "smell and taste": ("anosmia",),
    "laboratory": ("crp_high", "procalcitonin_high"),
    "SARS-CoV-2 test": ("sars_cov_2_test", "sars_cov_2_antigen", "sars_cov_2_pcr"),
    "influenza test": ("influenza_test",),
}
TEST_FAMILIES = ("SARS-CoV-2 test", "influenza test")
TEST_CONCEPTS = frozenset(k for f in TEST_FAMILIES for k in FAMILIES[f])
POPULATION_PLURAL = {"adult": "adults", "child": "children"}
_FAMILY_OF: dict[str, list[str]] = {}
for _fam, _keys in FAMILIES.items():
    for _k in _keys:
        _FAMILY_OF.setdefault(_k, []).append(_fam)

# concepts the note states in other words: key -> (concept whose likelihood ratio applies, how it is read)
ALIASES: dict[str, tuple[str, bool, str]] = {
    # (target, flips presence to absence, wording)
    "respiratory_symptoms": ("cough", False, "read as cough (the most frequent respiratory symptom)"),
    "asymptomatic": ("cough", True, "read as no cough"),
    "normal_lung_exam": ("crackles", True, "read as no crackles"),
    "sars_cov_2_test": ("sars_cov_2_pcr", False, "read as an RT-PCR result"),
    "covid19": ("sars_cov_2_pcr", False, "a stated COVID-19 diagnosis (or its exclusion) is read as an RT-PCR result"),
}
# measurement kind -> (concept, direction: abnormal when the value is >= threshold ("above") or <= ("below"))
MEASURED: dict[str, tuple[str, str]] = {
    "temperature": ("temperature_high", "above"), "spo2": ("hypoxemia", "below"),
    "resp_rate": ("tachypnea", "above"), "heart_rate": ("tachycardia", "above"),
    "crp": ("crp_high", "above"), "procalcitonin": ("procalcitonin_high", "above"),
}
NOT_EVIDENCE = {"pneumonia": "the diagnosis the film is taken to confirm or exclude: the radiograph is the test for "
                             "it, so naming it is not used as evidence"}


@dataclass(frozen=True)
class LikelihoodRow:
    concept: str
    finding: str
    population: str
    lr_pos: float | None
    lr_neg: float | None
    threshold: float | None
    cutoff: str
    use_flag: str            # "yes" | "no" | "blocked" (no figure, and the adult one must not stand in)
    source: str
    cite: str                # journal and year, as the draft's Indication quotes it (survives de-identification)
    quote: str
    url: str
    note: str

    @property
    def use(self) -> bool:
        return self.use_flag == "yes"


def _float(s: str) -> float | None:
    return float(s) if s and s.strip() else None


@lru_cache(maxsize=1)
def likelihood_table() -> tuple[LikelihoodRow, ...]:
    text = resources.files("medmm.notes").joinpath("likelihood_ratios.csv").read_text(encoding="utf-8")
    return tuple(LikelihoodRow(r["concept"], r["finding"], r["population"], _float(r["lr_pos"]), _float(r["lr_neg"]),
                               _float(r["threshold"]), r["cutoff"], r["use"].strip(), r["source"], r["cite"],
                               r["quote"], r["url"], r["note"])
                 for r in csv.DictReader(text.splitlines()))


@lru_cache(maxsize=1)
def pretest_table() -> dict[tuple[str, str], dict[str, Any]]:
    text = resources.files("medmm.notes").joinpath("pretest.csv").read_text(encoding="utf-8")
    return {(r["population"], r["finding"]): {"probability": float(r["probability"]), "source": r["source"],
                                             "quote": r["quote"], "url": r["url"]}
            for r in csv.DictReader(text.splitlines())}


# a concept a population's review reports under another name: (concept, population) -> (concept, how it is read)
STANDS_FOR: dict[tuple[str, str], tuple[str, str]] = {
    ("fever", "child"): ("temperature_high",
                         "a reported fever read as a temperature > 37.5 °C (the review's cut-off)"),
}


def _rows(concept: str, finding: str, population: str) -> tuple[list[LikelihoodRow], str | None]:
    """Used rows for (concept, finding, population) and how they were reached: the population's own rows; else
    the concept its review reports under another name (``STANDS_FOR``); else, for a child, the adult rows, flagged
    (unless a child row says ``use=blocked``: the pediatric review found no association)."""
    rows = [r for r in likelihood_table() if r.concept == concept and r.finding == finding]
    own = [r for r in rows if r.population == population and r.use]
    if own:
        return own, None
    if (concept, population) in STANDS_FOR:
        other, how = STANDS_FOR[(concept, population)]
        found, flag = _rows(other, finding, population)
        if found:
            return found, "; ".join(x for x in (how, flag) if x)
    blocked = any(r.population == population and r.use_flag == "blocked" for r in rows)
    if population == "child" and not blocked:
        adult = [r for r in rows if r.population == "adult" and r.use]
        if adult:
            return adult, "adult figure: no pediatric figure was found"
    return [], None


def findings_with_evidence(concept: str) -> list[str]:
    return [f for f in FINDINGS if any(r.concept == concept and r.finding == f for r in likelihood_table())]


@dataclass(frozen=True)
class Evidence:
    """One concept of the note, read for one finding: what it is, how it was asserted, and what it did."""

    concept: str                 # the concept whose likelihood ratio applies (after aliases / measurements)
    name: str                    # display name of what the note said
    text: str                    # the words of the note
    start: int
    end: int
    assertion: str
    finding: str | None
    lr: float | None = None      # the likelihood ratio applied (LR+ when present, LR- when absent)
    lr_kind: str | None = None   # "LR+" | "LR-"
    used: bool = False
    counted: bool = False        # used and counted after the family rule (else ``reason`` says why)
    reason: str = ""
    source: str = ""
    cite: str = ""
    url: str = ""
    cutoff: str = ""
    value: float | None = None
    unit: str | None = None
    cue: tuple[int, int] | None = None
    phrase: str = ""             # the concept with its cue, as the note says it ("no respiratory symptoms")

    @property
    def log_lr(self) -> float:
        return math.log(self.lr) if self.counted and self.lr else 0.0

    @property
    def direction(self) -> str:
        if not self.used or not self.lr or self.lr == 1:
            return "none"
        return "raises" if self.lr > 1 else "lowers"

    def citation(self) -> str:
        """"fever (LR+ 1.7 for pneumonia, JAMA 2017)": what the draft's Indication quotes (journal and year: an
        author's surname would be taken for a patient's name by the exports' de-identification)."""
        return f"{self.phrase or self.text} ({self.lr_kind} {self.lr:g} for {self.finding.lower()}, {self.cite})"

    def to_dict(self) -> dict[str, Any]:
        return {"concept": self.concept, "name": self.name, "text": self.text, "start": self.start, "end": self.end,
                "assertion": self.assertion, "finding": self.finding, "lr": self.lr, "lr_kind": self.lr_kind,
                "direction": self.direction, "used": self.used, "counted": self.counted, "reason": self.reason,
                "source": self.source, "url": self.url, "cutoff": self.cutoff, "value": self.value,
                "unit": self.unit, "phrase": self.phrase or self.text}

    def label(self) -> str:
        """'fever (LR+ 1.7 for Pneumonia, Metlay JP et al. JAMA 1997)' / 'cough: absent, not used (...)'."""
        if self.concept in TEST_CONCEPTS and self.assertion in (PRESENT, ABSENT):
            said = f"{self.name}: {'positive' if self.assertion == PRESENT else 'negative'}"
        else:
            said = self.name if self.assertion in (PRESENT, "measured") else f"no {self.name}" \
                if self.assertion == ABSENT else f"{self.name} ({self.assertion})"
        if not self.used:
            return f"{said}: not used ({self.reason})" if self.reason else f"{said}: not used"
        src = self.source.split(" (")[0]
        extra = "" if self.counted else f"; {self.reason}"
        return f"{said} ({self.lr_kind} {self.lr:.2g} for {self.finding}, {src}{extra})"


@dataclass(frozen=True)
class NotesEvidence:
    items: tuple[Evidence, ...]
    log_lr: dict[str, float]           # finding -> log likelihood ratio applied (after families and the cap)
    population: str                    # whose rows were used: "adult" | "child"
    population_from: str               # "note" | "image" | "default"
    context: tuple[str, ...] = ()
    capped: tuple[str, ...] = ()        # findings whose clinical total hit CLINICAL_CAP
    read_chars: int | None = None       # the note was longer than the reader reads: this many characters were read

    @property
    def used(self) -> tuple[Evidence, ...]:
        return tuple(e for e in self.items if e.used)

    @property
    def empty(self) -> bool:
        return not any(self.log_lr.values())

    def to_list(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.items]


def _measured(c: Concept, population: str) -> tuple[str, str, str]:
    """A measurement as a concept: (concept, PRESENT | ABSENT, cut-off wording) against its row's threshold."""
    concept, direction = MEASURED[c.key]
    rows = [r for f in FINDINGS for r in _rows(concept, f, population)[0] if r.threshold is not None]
    if not rows:
        return concept, "", ""
    if concept == "crp_high" or concept == "procalcitonin_high":
        above = [r for r in rows if c.value >= r.threshold]
        row = max(above, key=lambda r: r.threshold) if above else min(rows, key=lambda r: r.threshold)
    else:
        row = rows[0]
    t = row.threshold
    abnormal = c.value >= t if direction == "above" else c.value <= t
    sign = ">=" if direction == "above" else "<="
    return concept, PRESENT if abnormal else ABSENT, f"{sign} {t:g}{' ' + c.unit if c.unit else ''}"


def _candidates(reading: NoteReading, population: str) -> list[tuple[Concept, str, str, str, str]]:
    """(concept as read, concept whose rows apply, assertion, how it was read, cut-off) for every concept."""
    out = []
    for c in reading.concepts:
        if c.key in CONTEXT_CONCEPTS:
            continue
        if c.key in MEASURED:
            target, assertion, cutoff = _measured(c, population)
            out.append((c, target, assertion or "unscored", "", cutoff))
            continue
        target, flip, how = ALIASES.get(c.key, (c.key, False, ""))
        assertion = c.assertion
        if flip and assertion == PRESENT:
            assertion = ABSENT
        out.append((c, target, assertion, how, ""))
    # all three vital signs measured and normal, in an adult: the "normal vital signs" rule (Marchello 2019)
    measured = {c.key: (c, a) for c, t, a, _, _ in out if c.key in ("temperature", "resp_rate", "heart_rate")}
    if "temperature" not in measured:          # "afebrile" / "no fever" stands for a normal temperature
        said = [(c, a) for c, t, a, _, _ in out if c.key == "fever" and a == ABSENT]
        if said:
            measured["temperature"] = said[0]
    if population == "adult" and len(measured) == 3 and all(a == ABSENT for _, a in measured.values()):
        first = min((c for c, _ in measured.values()), key=lambda c: c.start)
        last = max((c for c, _ in measured.values()), key=lambda c: c.end)
        synthetic = Concept("normal_vital_signs", "temperature, respiratory rate and heart rate normal",
                            first.start, last.end, PRESENT)
        out.append((synthetic, "normal_vital_signs", PRESENT, "all three measured and normal", ""))
    # normal vital signs and a normal chest examination together: the combined rule replaces both
    said = {t for _, t, a, _, _ in out if a == PRESENT}
    if population == "adult" and "normal_vital_signs" in said and any(
            c.key == "normal_lung_exam" and a == ABSENT for c, _, a, _, _ in out):
        lung = next(c for c, _, a, _, _ in out if c.key == "normal_lung_exam")
        out.append((Concept("normal_vitals_and_lung_exam", lung.text, lung.start, lung.end, PRESENT),
                    "normal_vitals_and_lung_exam", PRESENT, "normal vital signs and a normal chest examination", ""))
    return out


_MEASURE_NAMES = {"temperature": "temperature", "spo2": "SpO2", "resp_rate": "respiratory rate",
                  "heart_rate": "heart rate", "crp": "CRP", "procalcitonin": "procalcitonin"}


def combine(reading: NoteReading, population_hint: str | None = None, text: str | None = None) -> NotesEvidence:
    """Evidence items of one note and the log likelihood ratio per finding (families, cap), for ``population``:
    the note's own (age, "infant", "58M"), else ``population_hint`` (the image's scope check), else adult.
    ``text``: the note itself, for each item's phrase with its cue ("no respiratory symptoms").

    Each concept gives one item per finding the table has rows for; a concept used for no finding keeps one item
    that says why (so the screen can show "not used")."""
    if reading.population:
        population, source = reading.population, "note"
    elif population_hint:
        population, source = population_hint, "image"
    else:
        population, source = "adult", "default"
    items: list[Evidence] = []
    for c, target, assertion, how, cutoff in _candidates(reading, population):
        measured = c.key in MEASURED
        name = (f"{_MEASURE_NAMES[c.key]} {c.value:g}{' ' + c.unit if c.unit else ''}" if measured else c.name)
        # what the note said (measured values are measurements; the others keep the note's own assertion)
        shown = "measured" if measured else c.assertion
        base = dict(name=name, text=c.text, start=c.start, end=c.end, assertion=shown, value=c.value, unit=c.unit,
                    cue=c.cue, cutoff=cutoff, phrase=c.phrase(text) if text is not None else c.text)
        if c.key in NOT_EVIDENCE:
            items.append(Evidence(c.key, finding=None, reason=NOT_EVIDENCE[c.key], **base))
            continue
        findings = findings_with_evidence(target)
        if not findings:
            items.append(Evidence(target, finding=None, reason="no published likelihood ratio in the table",
                                  **base))
            continue
        for finding in findings:
            if assertion == "unscored":
                items.append(Evidence(target, finding=finding, reason=f"no published cut-off and likelihood ratio "
                                      f"for {finding} in {POPULATION_PLURAL.get(population, population)}", **base))
                continue
            if assertion not in (PRESENT, ABSENT):
                why = "no result stated" if target in TEST_CONCEPTS and assertion == "possible" else \
                    f"{assertion}: not about this patient now"
                items.append(Evidence(target, finding=finding, reason=why, **base))
                continue
            rows, flag = _rows(target, finding, population)
            kind = "LR+" if assertion == PRESENT else "LR-"
            values = [r for r in rows if (r.lr_pos if assertion == PRESENT else r.lr_neg) is not None]
            if not values:
                blocked = [r for r in likelihood_table() if r.concept == target and r.finding == finding
                           and r.population == population and r.use_flag == "blocked"]
                why = blocked[0].note.split(": ", 1)[-1].split(" (")[0] if blocked else \
                    f"no published {kind} for {finding} in {POPULATION_PLURAL.get(population, population)}"
                items.append(Evidence(target, finding=finding, reason=why, **base))
                continue
            row = values[0]
            lr = row.lr_pos if assertion == PRESENT else row.lr_neg
            if measured and flag:
                items.append(Evidence(target, finding=finding, reason="no pediatric figure was found, and an adult "
                                      "cut-off is not applied to a child's measurement", **base))
                continue
            if measured:
                how = f"{'at or beyond' if assertion == PRESENT else 'within'} the cut-off ({cutoff or row.cutoff})"
            reason = "; ".join(x for x in (how, flag) if x)
            items.append(Evidence(target, finding=finding, lr=lr, lr_kind=kind, used=True, counted=True,
                                  reason=reason, source=row.source, cite=row.cite, url=row.url,
                                  **{**base, "cutoff": cutoff or row.cutoff}))
    items, log_lr, capped = _apply_families(items)
    return NotesEvidence(tuple(_tidy(items)), log_lr, population, source, reading.context, capped,
                         reading.read_chars)


def _tidy(items: list[Evidence]) -> list[Evidence]:
    """Keep every used item; of the rest, one per span of the note and only when nothing there was used."""
    used_spans = {(e.start, e.end) for e in items if e.used}
    out, seen = [], set()
    for e in items:
        span = (e.start, e.end)
        if e.used:
            out.append(e)
        elif span not in used_spans and span not in seen:
            seen.add(span)
            out.append(e)
    return out


def _apply_families(items: list[Evidence]) -> tuple[list[Evidence], dict[str, float], tuple[str, ...]]:
    """Per finding and family, only the strongest raising and strongest lowering item counts; the clinical
    families' total is capped at +-CLINICAL_CAP; tests are added outside the cap."""
    out = list(items)
    log_lr: dict[str, float] = {}
    capped: list[str] = []
    for finding in FINDINGS:
        idx = [i for i, e in enumerate(out) if e.used and e.finding == finding]
        if not idx:
            continue
        # the combined normal-vitals-and-chest rule replaces its parts
        if any(out[i].concept == "normal_vitals_and_lung_exam" for i in idx):
            for i in idx:
                if out[i].concept in ("normal_vital_signs", "crackles") and out[i].lr_kind in ("LR+", "LR-") \
                        and out[i].lr < 1:
                    out[i] = replace(out[i], counted=False, reason="counted in the combined normal-vital-signs "
                                                                   "and normal-chest rule")
        for family, keys in FAMILIES.items():
            members = [i for i in idx if out[i].counted and out[i].concept in keys]
            for sign in (1, -1):
                side = [i for i in members if sign * math.log(out[i].lr) > 0]
                if not side:
                    continue
                best = max(side, key=lambda i: sign * math.log(out[i].lr))
                for i in side:
                    if i != best:
                        out[i] = replace(out[i], counted=False,
                                         reason=f"counted once with {out[best].name} (same family: {family})")
        clinical = tests = 0.0
        for i in idx:
            if out[i].counted:
                if any(f in TEST_FAMILIES for f in _FAMILY_OF.get(out[i].concept, [])):
                    tests += math.log(out[i].lr)
                else:
                    clinical += math.log(out[i].lr)
        if abs(clinical) > CLINICAL_CAP:
            capped.append(finding)
            clinical = math.copysign(CLINICAL_CAP, clinical)
        log_lr[finding] = clinical + tests
    return out, log_lr, tuple(capped)


# ---------------------------------------------------------------------------------------------- Bayes on states
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
    return _apply_families(rest)[1]


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


def table_markdown() -> str:
    """The likelihood-ratio table as MODEL_CARD shows it (a test keeps the card equal to this): every row used,
    with its source; rows found and not used are listed after it with the reason."""
    def num(v: float | None) -> str:
        return "–" if v is None else f"{v:g}"

    rows = ["| concept | finding | population | LR+ | LR− | cut-off | source |", "|---|---|---|---|---|---|---|"]
    rows += [f"| {r.concept} | {r.finding} | {r.population} | {num(r.lr_pos)} | {num(r.lr_neg)} | "
             f"{r.cutoff or '–'} | {r.source} |" for r in likelihood_table() if r.use]
    rows += ["", "Found and not used (`use` = no / blocked in `medmm/notes/likelihood_ratios.csv`):", ""]
    rows += [f"- {r.concept} / {r.finding} / {r.population}: {r.note.split('. ')[0].rstrip('.')}."
             for r in likelihood_table() if not r.use]
    return "\n".join(rows)
