"""Draft a chest X-ray report from a ``Prediction`` for clinician review (pure, deterministic).

What
----
* ``draft_report(prediction, notes, bank)`` -> ``Report`` with Indication (scrubbed notes), Findings and
  Impression. Sentences are either *retrieved* from a bank of real IU report sentences (ranked by cosine
  similarity to the notes embedding, frequency when there are no notes) or *templated* (hedged statements
  for the modelled findings, probability in the text). Every sentence is label-checked with
  ``medmm.report.labeler`` so the draft never asserts a finding predicted negative nor negates one predicted positive.
* ``check_consistency(report_text, prediction)`` (``medmm.report.consistency``) re-runs the labeller over a
  (clinician-edited) report and lists contradictions with the model output.
* ``Report.to_text/to_markdown/to_dict/to_json``; the sentence bank, the consistency checks and the DICOM SR
  live next door (``bank``, ``consistency``, ``dicom_sr``).

Why this shape
--------------
A draft is only useful if it cannot silently disagree with the model, and only safe if it does not invent
findings the model does not assess: Findings and Impression speak only of the modelled findings (which ones are
present is ``prediction.positive``); heart, pleura and everything else is stated to be "not assessed by this
model", never described as normal. Competing subtypes (bacterial and viral both above threshold) are reported as
"subtype not determined". Notes text and identifiers are never logged.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from medmm import DISCLAIMER, __version__  # DISCLAIMER: the one wording, the report's NOTE
from medmm.calls import Call, statement
from medmm.labels import FINDINGS, NORMAL_FINDING
from medmm.prediction import Prediction
from medmm.report.bank import _LOCATION_RE, SentenceBank, load_bank
from medmm.report.consistency import (NEGATIVE_BANDS, PNEUMONIA_FAMILY, POSITIVE_BANDS, SUBTYPES, _bands,
                                      competing_subtypes, consistency_warnings, report_sections)
from medmm.report.deid import clean_indication as _deid_indication
from medmm.report.labeler import Mention

logger = logging.getLogger(__name__)

NOT_PROVIDED = "Not provided."
MAX_INDICATION_CHARS = 1000

# Which sentence-level status each probability band allows (hedging): likely -> asserted, possible -> hedged.
_ALLOWED_STATUS = {"negative": frozenset({"negative"}), "possible": frozenset({"uncertain"}),
                   "likely": frozenset({"positive"}), "not called": frozenset()}

# ----------------------------------------------------------------------------------------- templated wording
# Every template is checked by the labeller in tests (the draft must never contradict the prediction).
T_NO_IMAGE = ("No image was provided; the statements below are inferred from the clinical notes only and need "
              "confirmation on the radiograph.")
T_INCONSISTENT = "Model outputs are internally inconsistent across findings; check the per-finding probabilities."
T_SUBTYPE_CAVEAT = ("Radiographic appearance alone does not establish the causative organism; correlate with "
                    "clinical and microbiological results.")
# The model outputs only the FINDINGS; the draft says nothing else about the film except, explicitly, this.
T_NOT_ASSESSED = ("Heart, mediastinum, pleura, bones, devices and lung findings other than the modelled ones are "
                  "not assessed by this model.")
T_SUBTYPE_UNDETERMINED = ("Subtype not determined: the model cannot tell the competing subtypes apart (several are "
                          "above threshold; see the per-finding probabilities).")
# Bank sentences may speak only of these labeller concepts (the pneumonia family the model outputs).
MODELLED_CONCEPTS = frozenset({"covid19", "viral_pneumonia", "bacterial_pneumonia", "pneumonia", "infection",
                               "consolidation"})
INDICATION_CHARS = 300               # the draft's Indication: a readable summary of the notes, not a copy
T_NO_CONSOLIDATION = "No focal consolidation."
T_OPACITY = {"likely": "Airspace opacity consistent with pneumonia; its location is not determined by the model.",
             "possible": "Subtle airspace opacity cannot be excluded; its location is not determined by the model."}


# ----------------------------------------------------------------------------------------- notes -> indication
# De-identification lives in medmm.report.deid (rules + name lexicon, measured on a PHI corpus; see docs/privacy.md).
def clean_indication(notes: str | None, max_chars: int = MAX_INDICATION_CHARS) -> str:
    """Notes -> one scrubbed, whitespace-normalised paragraph of at most ``max_chars``; "Not provided." if empty."""
    return _deid_indication(notes, max_chars) or NOT_PROVIDED


# ----------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class DraftSentence:
    """One draft sentence and where it came from: 'retrieved' (bank index, count, score) or 'templated'."""

    section: str
    text: str
    source: str
    bank_index: int | None = None
    count: int | None = None
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"section": self.section, "text": self.text, "source": self.source, "bank_index": self.bank_index,
                "count": self.count, "score": self.score}


@dataclass(frozen=True)
class Report:
    """A machine draft: Indication, Findings, Impression, warnings and a fixed disclaimer.

    ``other_sections``: ``(name, text)`` sections a clinician added to an edited report (comparison, technique,
    recommendations, their own note...), kept in order; empty in a machine draft.
    """

    indication: str
    findings: str
    impression: str
    disclaimer: str = DISCLAIMER
    sentences: tuple[DraftSentence, ...] = ()
    model_outputs: tuple[dict[str, Any], ...] = ()   # finding, probability, threshold, band
    warnings: tuple[str, ...] = ()
    other_sections: tuple[tuple[str, str], ...] = ()

    def to_text(self) -> str:
        """Plain text with INDICATION / FINDINGS / IMPRESSION / [WARNINGS] / NOTE headers (``check_consistency``
        parses them; WARNINGS and NOTE are not checked)."""
        parts = [f"INDICATION: {self.indication}", f"FINDINGS: {self.findings}", f"IMPRESSION: {self.impression}"]
        parts += [f"{name.upper()}: {text}" for name, text in self.other_sections]
        if self.warnings:
            parts.append("WARNINGS:\n" + "\n".join(f"- {w}" for w in self.warnings))
        parts.append(f"NOTE: {self.disclaimer}")
        return "\n\n".join(parts) + "\n"

    def to_markdown(self) -> str:
        """Markdown with the notes-derived text escaped (no markup or HTML injection from the notes)."""
        parts = [f"**Indication:** {_md_escape(self.indication)}", f"**Findings:** {_md_escape(self.findings)}",
                 f"**Impression:** {_md_escape(self.impression)}"]
        parts += [f"**{_md_escape(name.capitalize())}:** {_md_escape(text)}" for name, text in self.other_sections]
        if self.warnings:
            parts.append("**Warnings:**\n\n" + "\n".join(f"- {_md_escape(w)}" for w in self.warnings))
        parts.append(f"> _{_md_escape(self.disclaimer)}_")
        return "\n\n".join(parts) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"indication": self.indication, "findings": self.findings, "impression": self.impression,
                "disclaimer": self.disclaimer, "sentences": [s.to_dict() for s in self.sentences],
                "model_outputs": [dict(m) for m in self.model_outputs], "warnings": list(self.warnings),
                "other_sections": [list(x) for x in self.other_sections], "generator": f"medmm {__version__}"}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)


# first word of a section header (plural "s" dropped) -> Report field; other sections are kept under their name
_EDIT_FIELD = {"indication": "indication", "clinical": "indication", "history": "indication", "reason": "indication",
               "finding": "findings", "body": "findings", "impression": "impression", "conclusion": "impression",
               "opinion": "impression"}
_MACHINE_SECTIONS = ("note", "disclaimer", "warning")


def apply_edits(report: Report, report_text: str) -> Report:
    """The draft ``report`` with every section of the (clinician-edited) ``report_text``.

    Indication / Findings / Impression (and their synonyms) replace the drafted ones; text before the first
    header (or a text without headers) goes into Findings; any other section (comparison, technique,
    recommendations...) is kept in ``other_sections``. In NOTE / WARNINGS the machine text (disclaimer, model
    warnings) is recognised and whatever the clinician added there is kept as a "note". The disclaimer, model
    outputs and warnings stay as drafted (they are not the clinician's to edit).
    """
    from dataclasses import replace

    if report_text == report.to_text():
        return report
    machine = sorted({" ".join(t.split()) for t in (report.disclaimer, *report.warnings) if t}, key=len, reverse=True)
    fields: dict[str, list[str]] = {"indication": [], "findings": [], "impression": []}
    others: list[tuple[str, str]] = []
    for name, text in report_sections(report_text):
        text = " ".join(text.split())
        head = name.split()[0].rstrip("s") if name.split() else "body"
        if head in _MACHINE_SECTIONS:
            for m in machine:
                text = text.replace(f"- {m}", " ").replace(m, " ")
            text = " ".join(text.split()).strip(" -")
            if text:
                others.append(("note", text))
            continue
        key = _EDIT_FIELD.get(head)
        if key is not None:
            if text:
                fields[key].append(text)
        elif text:
            others.append((name, text))
    return replace(report, indication=" ".join(fields["indication"]), findings=" ".join(fields["findings"]),
                   impression=" ".join(fields["impression"]), other_sections=tuple(others), sentences=())


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~])")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _eligible(mentions: Sequence[Mention], bands: dict[str, str]) -> bool:
    """A bank sentence may be used iff it speaks only of modelled findings, each hedged like the prediction.

    Prose about anatomy or abnormalities the model has no output for (heart size, effusion, pneumothorax,
    "the lungs are clear", "no acute cardiopulmonary abnormality") is never used.
    """
    if not mentions:
        return False
    for m in mentions:
        if m.concept not in MODELLED_CONCEPTS or m.asserts_abnormality():
            return False
        for f, s in m.finding_effects().items():
            band = bands.get(f)
            if band is None or s not in _ALLOWED_STATUS[band]:
                return False
    return True


def _scores(bank: SentenceBank, query: np.ndarray | None) -> np.ndarray:
    """Cosine similarity to the notes embedding plus a small frequency prior; frequency alone without notes."""
    if len(bank) == 0:
        return np.zeros(0)
    freq = np.log1p(bank.counts) / max(float(np.log1p(bank.counts.max())), 1e-9)
    if query is None or bank.embeddings is None:
        return np.round(freq, 6)
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    if q.shape[0] != bank.embeddings.shape[1] or not np.all(np.isfinite(q)) or not np.any(q):
        logger.warning("notes embedding has dimension %d, bank has %d: ranking by frequency",
                       q.shape[0], bank.embeddings.shape[1])
        return np.round(freq, 6)
    q = q / np.linalg.norm(q)
    return np.round(bank.embeddings @ q + 0.05 * freq, 6)


@dataclass(frozen=True)
class _Facts:
    """What the draft's sections are decided from: the calls and the labeller's bands of one prediction."""

    bands: dict[str, str]
    calls: dict[str, Call]
    probs: dict[str, float]
    image: bool
    pf_pos: list[str]             # pneumonia family called (or banded positive)
    sub_pos: list[str]            # subtypes banded positive
    competing: tuple[str, ...]
    covid_not_viral: bool
    inconsistent: bool

    @property
    def pneu(self) -> str | None:
        return self.bands.get("Pneumonia")

    @classmethod
    def of(cls, prediction: Prediction) -> "_Facts":
        bands, probs = _bands(prediction), prediction.findings
        calls = {f: prediction.call(f) for f in FINDINGS if f in probs and f in prediction.thresholds
                 and np.isfinite(probs[f]) and np.isfinite(prediction.thresholds[f])}
        pf_pos = [f for f in PNEUMONIA_FAMILY if bands.get(f) in POSITIVE_BANDS]
        sub_pos = [f for f in SUBTYPES if bands.get(f) in POSITIVE_BANDS]
        competing = competing_subtypes(bands)
        covid_not_viral = bands.get("COVID-19") in POSITIVE_BANDS and bands.get("Viral pneumonia") in NEGATIVE_BANDS \
            and not competing
        inconsistent = bool((bands.get(NORMAL_FINDING) in POSITIVE_BANDS and pf_pos)
                            or (bands.get("Pneumonia") in NEGATIVE_BANDS and sub_pos) or covid_not_viral)
        return cls(bands, calls, probs, "image" in prediction.modalities, pf_pos, sub_pos, competing, covid_not_viral,
                   inconsistent)


def _findings_sentences(facts: _Facts, bank: SentenceBank, scores: np.ndarray) -> list[DraftSentence]:
    """Findings: one statement about pneumonia (the only radiographic finding modelled), then the scope. Only a
    called pneumonia, or one the model finds unlikely on a film it may call normal (No Finding in scope), is
    described; a bank sentence when one fits the band, else templated wording."""
    out = [] if facts.image else [DraftSentence("findings", T_NO_IMAGE, "templated")]
    pc, nc = facts.calls.get("Pneumonia"), facts.calls.get(NORMAL_FINDING)
    if facts.image and pc is not None and pc.in_scope and not facts.inconsistent:
        wanted = {"possible": "uncertain", "likely": "positive", "negative": "negative"}.get(facts.pneu)
        if wanted == "negative" and not (nc is not None and nc.in_scope):
            wanted = None
        if wanted is not None:
            order = sorted(range(len(bank)), key=lambda i: (-scores[i], -int(bank.counts[i]), bank.texts[i]))
            pick = next((i for i in order if _eligible(bank.mentions[i], facts.bands)
                         and bank.labels(i) == {"Pneumonia": wanted}
                         and not (wanted != "negative" and _LOCATION_RE.search(bank.texts[i]))), None)
            if pick is not None:
                out.append(DraftSentence("findings", bank.texts[pick], "retrieved", pick, int(bank.counts[pick]),
                                         float(scores[pick])))
            else:
                text = T_NO_CONSOLIDATION if wanted == "negative" else T_OPACITY[facts.pneu]
                out.append(DraftSentence("findings", text, "templated"))
    out.append(DraftSentence("findings", T_NOT_ASSESSED, "templated"))
    return out


def _impression_texts(facts: _Facts) -> list[str]:
    """Impression: what is not assessed on this film; the called pneumonia family, most probable first; the subtypes
    of a called pneumonia; then No Finding and an uncalled pneumonia, each in the words of its band."""
    calls, probs, image = facts.calls, facts.probs, facts.image
    pc, nc = calls.get("Pneumonia"), calls.get(NORMAL_FINDING)
    out = [statement(calls[f], image) for f in (NORMAL_FINDING, "Pneumonia") if f in calls and not calls[f].in_scope]
    positives = sorted((f for f in facts.pf_pos if f not in facts.competing),
                       key=lambda f: (f != "Pneumonia", -probs[f], f))
    out += [statement(calls[f], image) if calls[f].called else
            f"{f} cannot be excluded (model probability {probs[f]:.2f})." for f in positives]
    if facts.competing or any(c.reason == "subtype indeterminate" for c in calls.values()):
        out.append(T_SUBTYPE_UNDETERMINED)
    elif facts.sub_pos:
        out.append(T_SUBTYPE_CAVEAT)
    if facts.pneu in POSITIVE_BANDS:
        for f in SUBTYPES:
            c = calls.get(f)
            if c is None or c.called or c.reason == "subtype indeterminate" or f in facts.competing \
                    or (f == "Viral pneumonia" and facts.covid_not_viral):
                continue
            if c.in_scope or c.probability >= c.threshold:
                out.append(statement(c, image))
    if facts.inconsistent:
        out.append(T_INCONSISTENT)
    elif nc is not None and nc.in_scope and (nc.called or not facts.pf_pos):
        out.append(statement(nc, image))
    if pc is not None and pc.in_scope and facts.pneu in NEGATIVE_BANDS and not facts.sub_pos:
        out.append(statement(pc, image))
    return out or ["No statement could be drafted for the modelled findings."]


def draft_report(prediction: Prediction, notes: str | None, bank: SentenceBank | None = None, *,
                 extra_warnings: Sequence[str] = ()) -> Report:
    """Draft Indication / Findings / Impression consistent with ``prediction`` (pure and deterministic).

    The draft speaks only of the modelled findings (``prediction.positive`` decides which are present) and says
    explicitly that everything else is not assessed. ``bank=None`` uses the shipped bank (templated wording only,
    with a warning, if it is missing); ``SentenceBank.empty()`` forces templated wording. Retrieved sentences are
    ranked by cosine similarity to ``prediction.notes_embedding`` (by frequency when there is none); the notes
    text itself is only scrubbed into the Indication. ``prediction.warnings``, ``extra_warnings`` (e.g. scans
    from different patients) and the drafter's own warnings end up in ``Report.warnings`` (a WARNINGS section).
    """
    warnings: list[str] = [*prediction.warnings, *extra_warnings]
    if bank is None:
        try:
            bank = load_bank()
        except FileNotFoundError:
            logger.warning("sentence bank missing; drafting with templated wording only")
            warnings.append("Sentence bank unavailable: templated wording only.")
            bank = SentenceBank.empty()
    facts = _Facts.of(prediction)
    warnings += consistency_warnings(prediction)
    findings = _findings_sentences(facts, bank, _scores(bank, prediction.notes_embedding))
    impression = [DraftSentence("impression", text, "templated") for text in _impression_texts(facts)]
    outputs = tuple({"finding": f, "probability": float(facts.probs[f]),
                     "threshold": float(prediction.thresholds[f]), "band": c.band,
                     "called": f in prediction.positive, "reason": c.reason} for f, c in facts.calls.items())
    indication = clean_indication(notes, max_chars=INDICATION_CHARS)
    evidence = getattr(prediction, "notes_evidence", None)
    counted = [e for e in (evidence.used if evidence is not None else ()) if e.counted]
    if counted and indication != NOT_PROVIDED:
        indication += " Evidence read from the notes: " + "; ".join(e.citation() for e in counted) + "."
    return Report(
        indication=indication,
        findings=" ".join(s.text for s in findings),
        impression=" ".join(s.text for s in impression),
        sentences=tuple(findings + impression),
        model_outputs=outputs,
        warnings=tuple(dict.fromkeys(w for w in warnings if w)),
    )


__all__ = ["DraftSentence", "NOT_PROVIDED", "Report", "apply_edits", "clean_indication", "draft_report"]
