"""Consistency of a prediction with itself and of a (clinician-edited) report with the prediction.

* ``consistency_warnings(prediction)``: internally inconsistent outputs, competing subtypes above threshold.
* ``check_consistency(report_text, prediction)`` re-runs the labeller over a report and lists the sentences that
  contradict the model output (``Contradiction``); ``report_sections`` parses the section headers.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from medmm.labels import FINDINGS, descendants
from medmm.prediction import Prediction
from medmm.report.labeler import find_mentions, split_sentences, strongest_statuses

logger = logging.getLogger(__name__)

MAX_REPORT_CHARS = 100_000           # check_consistency reads at most this much of an edited report

# from the one findings table (medmm.labels): pneumonia and its subtypes; subtypes deepest / last first
PNEUMONIA_FAMILY: tuple[str, ...] = ("Pneumonia", *descendants("Pneumonia"))
SUBTYPES: tuple[str, ...] = tuple(reversed(descendants("Pneumonia")))
POSITIVE_BANDS = frozenset({"possible", "likely"})
NEGATIVE_BANDS = frozenset({"negative", "not called"})

W_SUBTYPE_UNDETERMINED = ("Competing pneumonia subtypes are above threshold ({names}): the model cannot tell the "
                          "subtype; the draft does not name one.")
W_INCONSISTENT = "Model outputs are internally inconsistent across findings."


def _bands(prediction: Prediction) -> dict[str, str]:
    """Band per finding for the labeller's checks, from the prediction's calls (``medmm.calls``, the one rule).

    A called finding (in ``prediction.positive``) is 'likely' or 'possible'; a finding below its threshold with a
    probability under ``UNLIKELY_BELOW`` is 'negative' (a report may rule it out); any other finding not called
    (uncertain, or withheld at/above its threshold) is 'not called' (a report may neither assert nor rule it out
    on the model's word). Findings out of the checkpoint's scope, missing, or non-finite are left out: the model
    says nothing about them.
    """
    positive = set(prediction.positive)
    out = {}
    for f in FINDINGS:
        p, t = prediction.findings.get(f), prediction.thresholds.get(f)
        if p is None or t is None or not (math.isfinite(p) and math.isfinite(t)):
            continue
        call = prediction.call(f)
        if not call.in_scope:
            continue
        if f in positive:
            out[f] = call.band if call.band in POSITIVE_BANDS else "possible"
        else:
            out[f] = "negative" if call.band == "unlikely" else "not called"
    return out


def competing_subtypes(bands: dict[str, str]) -> tuple[str, ...]:
    """Subtypes above threshold that exclude each other (bacterial vs viral / COVID-19); () when coherent."""
    positive = [f for f in SUBTYPES if bands.get(f) in POSITIVE_BANDS]
    bacterial = "Bacterial pneumonia" in positive
    viral = any(f in positive for f in ("Viral pneumonia", "COVID-19"))
    return tuple(positive) if bacterial and viral else ()



def consistency_warnings(prediction: Prediction) -> list[str]:
    """Internal-consistency warnings of a prediction: incoherent outputs, competing subtypes above threshold."""
    bands = _bands(prediction)
    pf_pos = [f for f in PNEUMONIA_FAMILY if bands.get(f) in POSITIVE_BANDS]
    sub_pos = [f for f in SUBTYPES if bands.get(f) in POSITIVE_BANDS]
    competing = competing_subtypes(bands)
    covid_not_viral = bands.get("COVID-19") in POSITIVE_BANDS and bands.get("Viral pneumonia") in NEGATIVE_BANDS \
        and not competing
    out = []
    if (bands.get("No Finding") in POSITIVE_BANDS and pf_pos) or \
            (bands.get("Pneumonia") in NEGATIVE_BANDS and sub_pos) or covid_not_viral:
        out.append(W_INCONSISTENT)
    if competing and not any("subtype" in w.lower() for w in prediction.warnings):
        out.append(W_SUBTYPE_UNDETERMINED.format(names=", ".join(competing)))
    return out


@dataclass(frozen=True)
class Contradiction:
    """A report sentence that disagrees with the model on one finding."""

    finding: str
    report_status: str          # 'positive' | 'negative' | 'uncertain'
    model_band: str             # 'negative' | 'possible' | 'likely'
    probability: float
    threshold: float
    sentence: str
    evidence: str               # the words that carry the statement
    section: str
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_SECTION_NAMES = (r"indications?|clinical\s+history|clinical\s+indication|history|reason\s+for\s+(?:exam|examination|study)|"
                  r"comparison|technique|findings|impressions?|conclusions?|opinion|recommendations?|note|disclaimer|"
                  r"warnings?")
_HEADER_RE = re.compile(
    rf"^[ \t>]*(?:#{{1,6}}[ \t]*(?:\*\*|__)?[ \t]*(?P<a>{_SECTION_NAMES})[ \t]*:?[ \t]*(?:\*\*|__)?[ \t]*:?"
    rf"|(?:\*\*|__)?[ \t]*(?P<b>{_SECTION_NAMES})[ \t]*(?:\*\*|__)?[ \t]*:[ \t]*(?:\*\*|__)?)",
    re.I | re.M)
_UNCHECKED_SECTIONS = ("indication", "clinical", "history", "reason", "comparison", "technique", "note", "disclaimer",
                       "warning")


def report_sections(report_text: str) -> list[tuple[str, str]]:
    """``[(section name, text)]``; text before the first header (or the whole text without headers) is 'body'."""
    matches = list(_HEADER_RE.finditer(report_text))
    if not matches:
        return [("body", report_text)]
    out = []
    if report_text[: matches[0].start()].strip():
        out.append(("body", report_text[: matches[0].start()]))
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(report_text)
        name = " ".join((m.group("a") or m.group("b")).lower().split())
        out.append((name, report_text[m.end():end]))
    return out


def check_consistency(report_text: str, prediction: Prediction, *, include_uncertain: bool = False) -> list[Contradiction]:
    """Contradictions between a (possibly edited) report and the model's findings, one per sentence and finding.

    Flags a sentence that asserts a finding the model predicted negative, or negates one it predicted positive.
    With ``include_uncertain`` a hedged mention of a finding predicted negative is flagged too, as is a hedged
    abnormality ("possible small effusion") when the model predicted "No Finding". Indication,
    history, comparison, technique and note/disclaimer sections are not checked (they state the question, not
    the answer); without section headers the whole text is checked.
    """
    bands = _bands(prediction)
    out: list[Contradiction] = []
    report_text = report_text or ""
    if len(report_text) > MAX_REPORT_CHARS:
        logger.warning("report text longer than %d characters: only the start is checked", MAX_REPORT_CHARS)
        report_text = report_text[:MAX_REPORT_CHARS]
    for section, text in report_sections(report_text):
        if section.startswith(_UNCHECKED_SECTIONS):
            continue
        for sentence in split_sentences(text):
            mentions = find_mentions(sentence)
            per_finding = {f: (status, m.text) for f, (status, m) in strongest_statuses(mentions).items()}
            hedged = next((m for m in mentions if m.asserts_abnormality() and m.status == "uncertain"), None)
            if include_uncertain and hedged is not None and bands.get("No Finding") in POSITIVE_BANDS \
                    and "No Finding" not in per_finding:
                p, t = float(prediction.findings["No Finding"]), float(prediction.thresholds["No Finding"])
                out.append(Contradiction(
                    "No Finding", "uncertain", bands["No Finding"], p, t, sentence, hedged.text, section,
                    f"The report raises a possible abnormality ('{hedged.text}'), but the model predicted No Finding "
                    f"{bands['No Finding']} (p={p:.2f} >= threshold {t:.2f})."))
            for f in FINDINGS:
                if f not in per_finding or f not in bands:
                    continue
                status, evidence = per_finding[f]
                band, p, t = bands[f], float(prediction.findings[f]), float(prediction.thresholds[f])
                if status == "positive" and band in NEGATIVE_BANDS:
                    why = (f"The report asserts {f} ('{evidence}'), but the model predicted it negative "
                           f"(p={p:.2f} < threshold {t:.2f})." if p < t else
                           f"The report asserts {f} ('{evidence}'), but the model does not call it "
                           f"(p={p:.2f}: {prediction.call(f).reason}).")
                elif status == "negative" and band in POSITIVE_BANDS:
                    why = (f"The report rules out {f} ('{evidence}'), but the model predicted it {band} "
                           f"(p={p:.2f} >= threshold {t:.2f}).")
                elif include_uncertain and status == "uncertain" and band == "negative":
                    why = (f"The report raises the possibility of {f} ('{evidence}'); the model predicted it negative "
                           f"(p={p:.2f} < threshold {t:.2f}).")
                else:
                    continue
                out.append(Contradiction(f, status, band, p, t, sentence, evidence, section, why))
    return out


__all__ = ["Contradiction", "MAX_REPORT_CHARS", "POSITIVE_BANDS", "check_consistency", "competing_subtypes",
           "consistency_warnings", "NEGATIVE_BANDS", "report_sections"]
