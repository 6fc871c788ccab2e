"""Clinical concepts -> evidence with published strength -> a Bayes update of the image's answer.

This module reads a note's concepts as evidence items (``combine``: aliases, measurements against their cut-offs, the
rows that apply). Beside it: ``tables`` reads the evidence tables (``likelihood_ratios.csv``: one row per concept x
finding x population with the likelihood ratio for the concept's presence and absence, its source, the words of the
source that carry the number, and ``use``; ``pretest.csv``: the pre-test probabilities a notes-only request starts
from), ``families`` counts correlated concepts once and caps their total, and ``bayes`` updates the image's states.
Their public names are importable from here as well.

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

import math
from dataclasses import dataclass
from typing import Any

from medmm.labels import FINDINGS
from medmm.notes.bayes import (ROOT, finding_shift, item_effects, logit, marginals, pretest_states,
                               update_states)
from medmm.notes.families import CLINICAL_CAP, FAMILIES, TEST_CONCEPTS, TEST_FAMILIES, apply_families
from medmm.notes.reader import (ABSENT, CONTEXT_CONCEPTS, PRESENT, Concept, NoteReading)
from medmm.notes.tables import (STANDS_FOR, LikelihoodRow, findings_with_evidence, likelihood_table, pretest_table,
                                table_markdown, used_rows)

POPULATION_PLURAL = {"adult": "adults", "child": "children"}

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
    rows = [r for f in FINDINGS for r in used_rows(concept, f, population)[0] if r.threshold is not None]
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
            rows, flag = used_rows(target, finding, population)
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
    items, log_lr, capped = apply_families(items)
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


# the names other modules import from here (the families, the Bayes update and the tables live beside it)
__all__ = ["ALIASES", "CLINICAL_CAP", "Evidence", "FAMILIES", "LikelihoodRow", "MEASURED", "NOT_EVIDENCE",
           "NotesEvidence", "POPULATION_PLURAL", "ROOT", "STANDS_FOR", "TEST_CONCEPTS", "TEST_FAMILIES", "combine",
           "finding_shift", "findings_with_evidence", "item_effects", "likelihood_table", "logit", "marginals",
           "pretest_states", "pretest_table", "table_markdown", "update_states"]
