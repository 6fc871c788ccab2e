"""Draft a chest X-ray report from a ``Prediction`` for clinician review (pure, deterministic).

What
----
* ``draft_report(prediction, notes, bank)`` -> ``Report`` with Indication (scrubbed notes), Findings and
  Impression. Sentences are either *retrieved* from a bank of real IU report sentences (ranked by cosine
  similarity to the notes embedding, frequency when there are no notes) or *templated* (hedged statements
  for the modelled findings, probability in the text). Every sentence is label-checked with
  ``medmm.report.labeler`` so the draft never asserts a finding predicted negative nor negates one predicted positive.
* ``check_consistency(report_text, prediction)`` re-runs the labeller over a (clinician-edited) report and
  lists contradictions with the model output.
* ``Report.to_text/to_markdown/to_dict/to_json`` and ``to_dicom_sr`` (DICOM Basic Text SR, no identifiers).

Why this shape
--------------
A draft is only useful if it cannot silently disagree with the model, and only safe if it does not invent
findings the model does not assess: Findings and Impression speak only of the modelled findings (which ones are
present is ``prediction.positive``); heart, pleura and everything else is stated to be "not assessed by this
model", never described as normal. Competing subtypes (bacterial and viral both above threshold) are reported as
"subtype not determined". Notes text and identifiers are never logged.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Sequence

import numpy as np

from medmm import DISCLAIMER, __version__  # DISCLAIMER: the one wording, the report's NOTE
from medmm.report.labeler import CONCEPT_BY_NAME, Mention, find_mentions, split_sentences
from medmm.labels import FINDINGS
from medmm.prediction import Prediction

logger = logging.getLogger(__name__)

NOT_PROVIDED = "Not provided."
DEFAULT_BANK_PATH = Path(__file__).resolve().parents[2] / "assets" / "sentence_bank.npz"
BANK_ENV_VAR = "MEDMM_SENTENCE_BANK"
MAX_INDICATION_CHARS = 1000
MAX_REPORT_CHARS = 100_000           # check_consistency reads at most this much of an edited report

PNEUMONIA_FAMILY: tuple[str, ...] = ("Pneumonia", "Bacterial pneumonia", "Viral pneumonia", "COVID-19")
SUBTYPES: tuple[str, ...] = ("COVID-19", "Viral pneumonia", "Bacterial pneumonia")
POSITIVE_BANDS = frozenset({"possible", "likely"})
# Which sentence-level status each probability band allows (hedging): likely -> asserted, possible -> hedged.
_ALLOWED_STATUS = {"negative": frozenset({"negative"}), "possible": frozenset({"uncertain"}),
                   "likely": frozenset({"positive"})}

# ----------------------------------------------------------------------------------------- templated wording
# Every template is checked by the labeller in tests (the draft must never contradict the prediction).
_SUBTYPE_PHRASE = {"Bacterial pneumonia": "bacterial pneumonia", "Viral pneumonia": "viral pneumonia",
                   "COVID-19": "COVID-19 pneumonia"}
T_NO_IMAGE = ("No image was provided; the statements below are inferred from the clinical notes only and need "
              "confirmation on the radiograph.")
T_INCONSISTENT = "Model outputs are internally inconsistent across findings; check the per-finding probabilities."
T_SUBTYPE_CAVEAT = ("Radiographic appearance alone does not establish the causative organism; correlate with "
                    "clinical and microbiological results.")
T_NF_NEGATIVE = ("The model does not classify this study as normal; review the image for findings outside the "
                 "modelled set.")
# The model outputs only the FINDINGS; the draft says nothing else about the film except, explicitly, this.
T_NOT_ASSESSED = ("Heart, mediastinum, pleura, bones, devices and lung findings other than the modelled ones are "
                  "not assessed by this model.")
T_NORMAL_MODELLED = "Normal study for the findings this model assesses"
T_SUBTYPE_UNDETERMINED = ("Subtype not determined: the model cannot tell the competing subtypes apart (several are "
                          "above threshold; see the per-finding probabilities).")
W_SUBTYPE_UNDETERMINED = ("Competing pneumonia subtypes are above threshold ({names}): the model cannot tell the "
                          "subtype; the draft does not name one.")
W_INCONSISTENT = "Model outputs are internally inconsistent across findings."
# Bank sentences may speak only of these labeller concepts (the pneumonia family the model outputs).
MODELLED_CONCEPTS = frozenset({"covid19", "viral_pneumonia", "bacterial_pneumonia", "pneumonia", "infection",
                               "consolidation"})
INDICATION_CHARS = 300               # the draft's Indication: a readable summary of the notes, not a copy
T_NO_CONSOLIDATION = "No focal consolidation."
T_OPACITY = {"likely": "Airspace opacity consistent with pneumonia; its location is not determined by the model.",
             "possible": "Subtle airspace opacity cannot be excluded; its location is not determined by the model."}


def _p(prob: float) -> str:
    return f"(model probability {prob:.2f})"


def _finding_template(finding: str, band: str, prob: float, image: bool) -> str:
    """Hedged one-line statement for a modelled finding (templated, never retrieved)."""
    if finding == "Pneumonia":
        if band == "likely":
            return f"Findings consistent with pneumonia {_p(prob)}."
        if band == "possible":
            return f"Pneumonia cannot be excluded {_p(prob)}."
        where = "radiographic evidence of pneumonia" if image else "evidence of pneumonia from the available inputs"
        return f"No {where} {_p(prob)}."
    if finding == "No Finding":
        if band == "likely":
            return f"{T_NORMAL_MODELLED} (No Finding, model probability {prob:.2f})."
        if band == "possible":
            return f"Possibly a normal study {_p(prob)}."
        return T_NF_NEGATIVE
    phrase = _SUBTYPE_PHRASE[finding]
    if band == "likely":
        return f"Pattern consistent with {phrase} {_p(prob)}."
    if band == "possible":
        return f"{phrase[0].upper()}{phrase[1:]} cannot be excluded {_p(prob)}."
    return f"No specific features of {phrase} {_p(prob)}."


# ----------------------------------------------------------------------------------------- notes -> indication
# De-identification lives in medmm.report.deid (rules + name lexicon, measured on a PHI corpus; see docs/privacy.md).
from medmm.report.deid import DEID_METHOD, scrub_identifiers  # noqa: E402  (re-exported: report.scrub_identifiers)
from medmm.report.deid import clean_indication as _deid_indication  # noqa: E402


def clean_indication(notes: str | None, max_chars: int = MAX_INDICATION_CHARS) -> str:
    """Notes -> one scrubbed, whitespace-normalised paragraph of at most ``max_chars``; "Not provided." if empty."""
    return _deid_indication(notes, max_chars) or NOT_PROVIDED


# ----------------------------------------------------------------------------------------- sentence bank
_COMPARISON_RE = re.compile(
    r"\b(?:compar\w*|prior|previous\w*|interval\w*|unchanged|stable|again|since|new|newly|redemonstrat\w*|"
    r"persist\w*|improv\w*|wors\w*|increas\w*|decreas\w*|resolv\w*|resolution|chang\w*|today|yesterday|recent\w*|"
    r"follow[- ]?up|recommend\w*|correlat\w*|ct|dated|exam|examination|views?|frontal|obtained|technique|portable|"
    r"patient\w*|history|clinical\w*|given|setting|consists|film|films|please|report\w*|remainder|remaining|remains?|remained)\b", re.I)
_ANAPHORA_RE = re.compile(r"^(?:this|these|it|they|which|that|otherwise|also|both\s+of|the\s+remainder)\b", re.I)
_LOCATION_RE = re.compile(
    r"\b(?:right|left|bilateral\w*|bibasilar|basilar|bas(?:e|es|al)|lobes?|apex|apices|apical|lingula\w*|perihilar|"
    r"hilar|upper|lower|middle|mid|midlung|retrocardiac|lateral|medial|anterior|posterior|subsegmental|segment\w*|"
    r"zones?|peripheral|central)\b", re.I)


_RUN_ON_RE = re.compile(r"[a-z,] (?:No|There|The|Normal|Heart|Lungs?|Negative|Clear|Cardiac|Mediastinal)\b")


def clean_bank_sentence(sentence: str) -> str | None:
    """Normalise one IU sentence for the bank, or ``None`` when it should not be reused.

    Dropped: sentences that relied on an ``XXXX`` placeholder (only "x-XXXX" -> "x-ray" is repaired), comparison /
    history / technique language (no prior study is available to a draft), anaphora ("This may represent ..."),
    numbers, fragments and run-ons.
    """
    s = re.sub(r"\bx-XXXX\b", "x-ray", sentence, flags=re.I)
    if "XXXX" in s or re.search(r"\d", s):
        return None
    s = " ".join(s.split()).strip(" ,;:")
    s = re.sub(r"^(?:specifically|overall|chest)[,:.]?\s+", "", s, flags=re.I)
    s = re.sub(r"\s+([.,;:])", r"\1", s)
    s = re.sub(r"[.]{2,}$", ".", s).rstrip()
    if not s or not s[0].isalpha():
        return None
    if not s.endswith((".", "?", "!")):
        s += "."
    s = s[0].upper() + s[1:]
    n_words = len(s.split())
    if n_words < 2 or n_words > 30 or _ANAPHORA_RE.search(s) or _COMPARISON_RE.search(s):
        return None
    if s.count("(") != s.count(")") or _RUN_ON_RE.search(s, 1):
        return None
    return s


def _bank_usable(sentence: str, mentions: Sequence[Mention]) -> bool:
    """Whether a cleaned sentence could ever be eligible in a draft (see ``_eligible``)."""
    if not mentions:
        return False
    for m in mentions:
        concept = CONCEPT_BY_NAME[m.concept]
        effects = m.finding_effects()
        if m.asserts_abnormality():
            return False
        if concept.kind == "normal" and m.status != "positive":
            return False
        if effects.get("No Finding") in ("negative", "uncertain"):
            return False
        if effects.get("No Finding") == "positive" and any(
                f != "No Finding" and st != "negative" for o in mentions for f, st in o.finding_effects().items()):
            return False  # self-contradictory prose ("lungs are clear airspace disease")
        asserts = any(f != "No Finding" and s in ("positive", "uncertain") for f, s in effects.items())
        if asserts and _LOCATION_RE.search(sentence):
            return False
        if m.concept == "lungs_clear" and re.search(r"\b(?:right|left)\b", sentence, re.I):
            return False  # "the left lung is clear" implies the other one is not
    return True


@dataclass(frozen=True, eq=False)
class SentenceBank:
    """Deduplicated report sentences with frequencies, section counts and embeddings.

    ``counts[i]``: reports containing sentence i; ``impression_counts[i]``: of which in the impression section.
    ``embeddings``: ``[N, D]`` float32, L2-normalised (``None`` -> frequency ranking only). Labels are recomputed
    from the text with the current labeller when the bank is constructed, so they can never go stale.
    """

    texts: tuple[str, ...]
    counts: np.ndarray
    impression_counts: np.ndarray
    embeddings: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    mentions: tuple[tuple[Mention, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        counts = np.array(self.counts, dtype=np.int64).reshape(-1)
        imp = np.array(self.impression_counts, dtype=np.int64).reshape(-1)
        if not (len(self.texts) == len(counts) == len(imp)):
            raise ValueError("texts, counts and impression_counts must have the same length")
        emb = self.embeddings
        if emb is not None:
            emb = np.asarray(emb, dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(self.texts):
                raise ValueError(f"embeddings must be [N, D] with N={len(self.texts)}, got {emb.shape}")
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        for arr in (counts, imp) + ((emb,) if emb is not None else ()):
            arr.flags.writeable = False          # shared read-only across requests (load_bank caches it)
        object.__setattr__(self, "texts", tuple(str(t) for t in self.texts))
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "impression_counts", imp)
        object.__setattr__(self, "embeddings", emb)
        object.__setattr__(self, "mentions", tuple(tuple(find_mentions(t)) for t in self.texts))

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def empty(cls) -> "SentenceBank":
        """A bank with no sentences: the draft then uses templated wording only."""
        return cls((), np.zeros(0, np.int64), np.zeros(0, np.int64), None, {"empty": True})

    def labels(self, i: int) -> dict[str, str]:
        """Finding labels of sentence ``i`` (same aggregation as ``labeler.label_sentence``)."""
        out: dict[str, str] = {}
        rank = {"positive": 3, "uncertain": 2, "negative": 1}
        for m in self.mentions[i]:
            for f, s in m.finding_effects().items():
                if f not in out or rank[s] > rank[out[f]]:
                    out[f] = s
        return out

    def save(self, path: str | Path) -> None:
        """Write a compressed ``.npz`` (no pickles; embeddings stored as float16)."""
        labels = [self.labels(i) for i in range(len(self))]
        arrays: dict[str, np.ndarray] = {
            "texts": np.array(self.texts, dtype=np.str_),
            "counts": self.counts.astype(np.int32),
            "impression_counts": self.impression_counts.astype(np.int32),
            "labels_json": np.array(json.dumps(labels)),
            "meta_json": np.array(json.dumps(self.meta, sort_keys=True)),
        }
        if self.embeddings is not None:
            arrays["embeddings"] = self.embeddings.astype(np.float16)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "SentenceBank":
        """Read a bank written by ``save`` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            emb = z["embeddings"].astype(np.float32) if "embeddings" in z.files else None
            meta = json.loads(str(z["meta_json"])) if "meta_json" in z.files else {}
            return cls(tuple(z["texts"].tolist()), z["counts"], z["impression_counts"], emb, meta)


def build_bank(reports: Iterable[tuple[str | None, str | None]],
               embed_fn: Callable[[list[str]], np.ndarray] | None,
               min_count: int = 2, meta: dict[str, Any] | None = None) -> SentenceBank:
    """Sentence bank from ``(findings, impression)`` pairs: split, clean, dedupe, count, filter, embed.

    A sentence is kept when it could be used by a draft (it has a labelled concept and asserts nothing the
    model does not predict) and appears in at least ``min_count`` reports; sentences asserting or hedging a
    modelled finding are rare in IU prose, so drafts template those.
    """
    counts: Counter[str] = Counter()
    imp_counts: Counter[str] = Counter()
    n_reports = 0
    for findings, impression in reports:
        n_reports += 1
        seen: dict[str, bool] = {}
        for section_is_imp, text in ((False, findings), (True, impression)):
            for raw in split_sentences(text or ""):
                s = clean_bank_sentence(raw)
                if s is not None:
                    seen[s] = seen.get(s, False) or section_is_imp
        for s, in_imp in seen.items():
            counts[s] += 1
            imp_counts[s] += int(in_imp)
    keep = []
    for s in sorted(counts):
        mentions = find_mentions(s)
        if not _bank_usable(s, mentions):
            continue
        if counts[s] >= min_count:
            keep.append(s)
    keep.sort(key=lambda s: (-counts[s], s))
    emb = None
    if embed_fn is not None and keep:
        emb = np.asarray(embed_fn(list(keep)), dtype=np.float32)
    info = {"n_reports": n_reports, "n_sentences": len(keep), "min_count": min_count, **(meta or {})}
    logger.info("sentence bank: %d sentences from %d reports", len(keep), n_reports)
    return SentenceBank(tuple(keep), np.array([counts[s] for s in keep], np.int64),
                        np.array([imp_counts[s] for s in keep], np.int64), emb, info)


def load_bank(path: str | Path | None = None) -> SentenceBank:
    """The shipped bank (``assets/sentence_bank.npz`` or ``$MEDMM_SENTENCE_BANK``), loaded once per file (read-only)."""
    resolved = Path(path or os.environ.get(BANK_ENV_VAR) or DEFAULT_BANK_PATH).resolve()
    if not resolved.exists():
        raise FileNotFoundError(f"sentence bank not found: {resolved} (run scripts/build_sentence_bank.py)")
    stat = resolved.stat()
    return _load_bank_cached(str(resolved), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load_bank_cached(path: str, mtime_ns: int, size: int) -> SentenceBank:
    return SentenceBank.load(path)


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


def _bands(prediction: Prediction) -> dict[str, str]:
    """Band per finding, following ``prediction.positive`` (the pipeline's output rule is the one truth).

    A finding in ``positive`` is 'likely' or 'possible' (its probability band, at least 'possible'); any other is
    'negative' even when its probability is above the threshold (the pipeline may suppress an incoherent
    output). Findings missing from the prediction or with a non-finite probability are left out.
    """
    positive = set(prediction.positive)
    out = {}
    for f in FINDINGS:
        p, t = prediction.findings.get(f), prediction.thresholds.get(f)
        if p is None or t is None or not (math.isfinite(p) and math.isfinite(t)):
            continue
        band = prediction.band(f)
        out[f] = (band if band in POSITIVE_BANDS else "possible") if f in positive else "negative"
    return out


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


def competing_subtypes(bands: dict[str, str]) -> tuple[str, ...]:
    """Subtypes above threshold that exclude each other (bacterial vs viral / COVID-19); () when coherent."""
    positive = [f for f in SUBTYPES if bands.get(f) in POSITIVE_BANDS]
    bacterial = "Bacterial pneumonia" in positive
    viral = any(f in positive for f in ("Viral pneumonia", "COVID-19"))
    return tuple(positive) if bacterial and viral else ()


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


def consistency_warnings(prediction: Prediction) -> list[str]:
    """Internal-consistency warnings of a prediction: incoherent outputs, competing subtypes above threshold."""
    bands = _bands(prediction)
    pf_pos = [f for f in PNEUMONIA_FAMILY if bands.get(f) in POSITIVE_BANDS]
    sub_pos = [f for f in SUBTYPES if bands.get(f) in POSITIVE_BANDS]
    competing = competing_subtypes(bands)
    covid_not_viral = bands.get("COVID-19") in POSITIVE_BANDS and bands.get("Viral pneumonia") == "negative" \
        and not competing
    out = []
    if (bands.get("No Finding") in POSITIVE_BANDS and pf_pos) or (bands.get("Pneumonia") == "negative" and sub_pos) \
            or covid_not_viral:
        out.append(W_INCONSISTENT)
    if competing and not any("subtype" in w.lower() for w in prediction.warnings):
        out.append(W_SUBTYPE_UNDETERMINED.format(names=", ".join(competing)))
    return out


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
    bands = _bands(prediction)
    probs = prediction.findings
    image = "image" in prediction.modalities
    nf = bands.get("No Finding")
    pf_pos = [f for f in PNEUMONIA_FAMILY if bands.get(f) in POSITIVE_BANDS]
    sub_pos = [f for f in SUBTYPES if bands.get(f) in POSITIVE_BANDS]
    competing = competing_subtypes(bands)
    pneu = bands.get("Pneumonia")
    covid_not_viral = bands.get("COVID-19") in POSITIVE_BANDS and bands.get("Viral pneumonia") == "negative" \
        and not competing
    inconsistent = bool((nf in POSITIVE_BANDS and pf_pos) or (pneu == "negative" and sub_pos) or covid_not_viral)

    scores = _scores(bank, prediction.notes_embedding)
    order = sorted(range(len(bank)), key=lambda i: (-scores[i], -int(bank.counts[i]), bank.texts[i]))
    eligible = [i for i in order if _eligible(bank.mentions[i], bands)]

    findings: list[DraftSentence] = []
    impression: list[DraftSentence] = []

    def retrieved(section: str, i: int) -> DraftSentence:
        return DraftSentence(section, bank.texts[i], "retrieved", i, int(bank.counts[i]), float(scores[i]))

    def templated(section: str, text: str) -> DraftSentence:
        return DraftSentence(section, text, "templated")

    if not image:
        findings.append(templated("findings", T_NO_IMAGE))
    warnings += consistency_warnings(prediction)

    # ---- Findings: one statement about pneumonia (the only radiographic finding modelled), then the scope.
    if pneu is not None and not (pneu == "negative" and sub_pos):
        wanted = {"negative": "negative", "possible": "uncertain", "likely": "positive"}[pneu]
        pick = next((i for i in eligible if bank.labels(i) == {"Pneumonia": wanted}
                     and not (wanted != "negative" and _LOCATION_RE.search(bank.texts[i]))), None)
        if pick is not None:
            findings.append(retrieved("findings", pick))
        elif pneu == "negative":
            findings.append(templated("findings", T_NO_CONSOLIDATION))
        elif image:
            findings.append(templated("findings", T_OPACITY[pneu]))
    findings.append(templated("findings", T_NOT_ASSESSED))

    # ---- Impression: modelled findings, most probable first; then "No Finding".
    positives = sorted((f for f in pf_pos if f not in competing), key=lambda f: (f != "Pneumonia", -probs[f], f))
    for f in positives:
        impression.append(templated("impression", _finding_template(f, bands[f], probs[f], image)))
    if competing:
        impression.append(templated("impression", T_SUBTYPE_UNDETERMINED))
    elif sub_pos:
        impression.append(templated("impression", T_SUBTYPE_CAVEAT))
    if pneu in POSITIVE_BANDS:
        for f in SUBTYPES:
            if bands.get(f) == "negative" and not (f == "Viral pneumonia" and covid_not_viral):
                impression.append(templated("impression", _finding_template(f, "negative", probs[f], image)))
    if inconsistent:
        impression.append(templated("impression", T_INCONSISTENT))
    if nf in POSITIVE_BANDS and not inconsistent:
        impression.append(templated("impression", _finding_template("No Finding", nf, probs["No Finding"], image)))
    elif nf == "negative" and not pf_pos:
        impression.append(templated("impression", T_NF_NEGATIVE))
    if pneu == "negative" and not sub_pos:
        impression.append(templated("impression", _finding_template("Pneumonia", "negative", probs["Pneumonia"], image)))

    if not impression:
        impression.append(templated("impression", "No statement could be drafted for the modelled findings."))
    outputs = tuple({"finding": f, "probability": float(probs[f]), "threshold": float(prediction.thresholds[f]),
                     "band": bands[f]} for f in FINDINGS if f in bands)
    return Report(
        indication=clean_indication(notes, max_chars=INDICATION_CHARS),
        findings=" ".join(s.text for s in findings),
        impression=" ".join(s.text for s in impression),
        sentences=tuple(findings + impression),
        model_outputs=outputs,
        warnings=tuple(dict.fromkeys(w for w in warnings if w)),
    )


# ----------------------------------------------------------------------------------------- consistency
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
            per_finding: dict[str, tuple[str, str]] = {}
            rank = {"positive": 3, "uncertain": 2, "negative": 1}
            mentions = find_mentions(sentence)
            for m in mentions:
                for f, s in m.finding_effects().items():
                    if f not in per_finding or rank[s] > rank[per_finding[f][0]]:
                        per_finding[f] = (s, m.text)
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
                if status == "positive" and band == "negative":
                    why = (f"The report asserts {f} ('{evidence}'), but the model predicted it negative "
                           f"(p={p:.2f} < threshold {t:.2f}).")
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


# ----------------------------------------------------------------------------------------- DICOM SR
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
# clinician sections beyond Indication / Findings / Impression -> DCM heading (DICOM CID 7001); others: Comment
_SR_HEADING = {"recommendation": ("121074", "DCM", "Recommendations"),
               "technique": ("121064", "DCM", "Current Procedure Descriptions"),
               "comparison": ("121066", "DCM", "Prior Procedure Descriptions")}


def _code(ds_cls: Any, value: str, scheme: str, meaning: str) -> Any:
    item = ds_cls()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def to_dicom_sr(report: Report, prediction: Prediction, path_or_buffer: str | Path | BinaryIO) -> Any:
    """Write ``report`` as a DICOM Basic Text SR (UNVERIFIED, PARTIAL) and return the pydicom Dataset.

    The Patient module is written with empty values and no input identifiers are copied (the indication, the
    only notes-derived text, is scrubbed again here in case an edit re-introduced identifiers). Fresh UIDs every
    call; Explicit VR Little Endian file meta.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    now = _dt.datetime.now(_dt.timezone.utc)
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    sop_uid = generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDMM_{__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.TimezoneOffsetFromUTC = "+0000"
    # Patient (Type 2, deliberately empty)
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"   # true: no header identifier is copied and every TEXT item is scrubbed below
    ds.DeidentificationMethod = DEID_METHOD
    # General Study
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    # SR Document Series
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = "medmm machine draft report"
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence([])
    # General Equipment
    ds.Manufacturer = "medmm"
    ds.ManufacturerModelName = "medmm decision-support demo"
    ckpt = prediction.checkpoint or {}
    versions = [f"medmm {__version__}"]
    if ckpt.get("version"):
        versions.append(f"checkpoint {ckpt.get('name', 'medmm')} {ckpt['version']}")
    ds.SoftwareVersions = versions if len(versions) > 1 else versions[0]
    # SR Document General
    ds.InstanceNumber = 1
    ds.CompletionFlag = "PARTIAL"
    ds.CompletionFlagDescription = "Machine-generated draft; requires clinician review"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PreliminaryFlag = "PRELIMINARY"
    ds.ContentDate, ds.ContentTime = date, time
    ds.PerformedProcedureCodeSequence = DicomSequence([])
    # SR Document Content: CONTAINER root with TEXT children
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([_code(Dataset, "18748-4", "LN", "Diagnostic Imaging Report")])
    ds.ContinuityOfContent = "SEPARATE"

    def text_item(code: tuple[str, str, str], value: str) -> Dataset:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "TEXT"
        item.ConceptNameCodeSequence = DicomSequence([_code(Dataset, *code)])
        item.TextValue = scrub_identifiers(value)   # every text, clinician edits included (medmm.report.deid)
        return item

    outputs = "; ".join(f"{m['finding']} {m['probability']:.2f} (threshold {m['threshold']:.2f}, {m['band']})"
                        for m in report.model_outputs)
    items = [
        # scrubbed again: an edited report's indication may have had identifiers typed back in
        text_item(("121109", "DCM", "Indications for Procedure"), scrub_identifiers(report.indication)),
        text_item(("121070", "DCM", "Findings"), report.findings),
        text_item(("121072", "DCM", "Impressions"), report.impression),
    ]
    for name, text in report.other_sections:   # every clinician section, in order (CID 7001 headings)
        code = _SR_HEADING.get(name.split()[0].rstrip("s") if name.split() else "")
        items.append(text_item(code, text) if code else
                     text_item(("121106", "DCM", "Comment"), f"{name.capitalize()}: {text}"))
    items.append(text_item(("121106", "DCM", "Comment"), report.disclaimer))
    if report.warnings:
        items.append(text_item(("121106", "DCM", "Comment"), "Model warnings: " + " ".join(report.warnings)))
    if outputs:
        items.append(text_item(("121106", "DCM", "Comment"), f"Model outputs: {outputs}."))
    ds.ContentSequence = DicomSequence(items)
    ds.save_as(path_or_buffer, enforce_file_format=True)
    return ds


__all__ = [
    "BASIC_TEXT_SR", "Contradiction", "DISCLAIMER", "DraftSentence", "NOT_PROVIDED", "Report", "SentenceBank",
    "apply_edits", "build_bank", "check_consistency", "clean_bank_sentence", "clean_indication", "competing_subtypes",
    "consistency_warnings",
    "draft_report", "load_bank",
    "report_sections", "scrub_identifiers", "to_dicom_sr",
]
