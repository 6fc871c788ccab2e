"""Rule-based (NegEx-style) labeller for chest X-ray report sentences.

What: finds *concept* mentions in a sentence (pneumonia, consolidation, "lungs are clear", "no acute
cardiopulmonary abnormality", effusion, pneumothorax, cardiomegaly, ...), decides each mention's assertion
status (positive / negative / uncertain) from trigger phrases whose scope ends at clause boundaries ("but",
"however", "which", ";"), and maps concept statuses onto ``FINDINGS``.

Why rules and not a model: the labeller is used to (1) label the IU sentence bank, (2) keep machine drafts
consistent with the prediction and (3) flag clinician edits that contradict it. All three need behaviour that
is transparent, deterministic and cheap (no torch import). Standard library only.

Conventions
-----------
* Only what a sentence says *explicitly* is reported: "no pneumonia" does not imply "no viral pneumonia", and
  a positive pneumonia mention does not by itself make "No Finding" negative. ``binary_labels`` applies the
  hierarchy for evaluation.
* The longest concept match wins and consumes its span, so "bacterial pneumonia" labels only
  "Bacterial pneumonia" and "COVID-19 pneumonia" only "COVID-19".
* Historical mentions ("history of pneumonia", "prior granulomatous infection") are dropped, not negated.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterable, Literal

from medmm.labels import FINDINGS

logger = logging.getLogger(__name__)

Status = Literal["positive", "negative", "uncertain"]
STATUSES: tuple[str, ...] = ("positive", "negative", "uncertain")
LABELER_VERSION = "1"

# Scope limits (in words) between a trigger and the concept it modifies.
_PRE_WINDOW = 12
_POST_WINDOW = 6
_BI_WINDOW = 6


@dataclass(frozen=True)
class Concept:
    """A report concept: regex patterns and how each of its statuses maps onto FINDINGS.

    ``clause`` concepts are whole statements ("the lungs are clear"); preceding negation triggers are not
    applied to them (a list such as "no effusion, lungs are clear" must not negate the clear lungs).
    ``kind`` groups concepts for drafting: 'finding' (maps onto a modelled finding), 'normal' (a normal
    statement about anatomy the model does not predict), 'abnormal' (an abnormality the model does not
    predict).
    """

    name: str
    patterns: tuple[str, ...]
    effects: dict[str, dict[str, str]]
    kind: str = "finding"
    clause: bool = False


def _same(finding: str) -> dict[str, dict[str, str]]:
    return {s: {finding: s} for s in STATUSES}


# Report-only abnormality: asserting it makes the study abnormal (No Finding negative); negating it says nothing.
# A hedged abnormality ("possible small effusion") is "possibly abnormal", which the three statuses cannot say
# about "No Finding" (its 'uncertain' means "possibly normal"), so it has no finding effect; see
# ``asserts_abnormality``.
_ABNORMAL_EFFECTS = {"positive": {"No Finding": "negative"}, "uncertain": {}, "negative": {}}
# Whole-study normal statements: "the lungs are clear", "normal chest".
_NORMAL_STUDY_EFFECTS = {
    "positive": {"No Finding": "positive", "Pneumonia": "negative"},
    "uncertain": {"No Finding": "uncertain"},
    "negative": {"No Finding": "negative"},
}

CONCEPTS: tuple[Concept, ...] = (
    Concept("covid19", (
        r"covid(?:[- ]?19)?(?:\s+(?:pneumonia|pneumonitis|infection|disease))?",
        r"sars[- ]?cov[- ]?2(?:\s+(?:pneumonia|infection))?",
        r"(?:novel\s+)?coronavirus(?:\s+disease)?(?:\s+2019)?(?:\s+(?:pneumonia|infection))?",
        r"2019[- ]ncov",
    ), _same("COVID-19")),
    Concept("viral_pneumonia", (
        r"viral\s+(?:pneumonias?|pneumonitis|lower\s+respiratory\s+(?:tract\s+)?infections?|infections?|"
        r"(?:infectious\s+)?process|etiology)",
        r"(?:influenza|rsv|adenoviral|adenovirus|measles|varicella)\s+pneumonia",
    ), _same("Viral pneumonia")),
    Concept("bacterial_pneumonia", (
        r"bacterial\s+(?:pneumonias?|infections?|(?:infectious\s+)?process|etiology)",
        r"(?:pneumococcal|staphylococcal|streptococcal|klebsiella|legionella|mycoplasma|pseudomonas)\s+pneumonia",
    ), _same("Bacterial pneumonia")),
    Concept("pneumonia", (
        r"(?:broncho)?pneumonias?",
        r"pneumonic\s+(?:consolidation|infiltrates?|process)",
    ), _same("Pneumonia")),
    Concept("infection", (
        r"(?:(?:acute|atypical|active|superimposed|chest|lung|pulmonary|lower\s+respiratory(?:\s+tract)?)\s+)?"
        r"(?:infections?|infectious\s+(?:process|processes|etiology|infiltrates?|disease))",
    ), _same("Pneumonia")),
    # Consolidation / airspace disease / infiltrate: radiographic support for pneumonia.
    Concept("consolidation", (
        r"(?:air[- ]?space|alveolar)\s+(?:disease|opacit(?:y|ies)|consolidations?|process|filling|infiltrates?)",
        r"consolidat(?:ion|ions|ive|ed)",
        r"infiltrat(?:e|es|ion)",
        r"confluent\s+opacit(?:y|ies)",
    ), _same("Pneumonia")),
    # "acute cardiopulmonary abnormality": negated -> normal study; asserted -> abnormal study.
    Concept("acute_abnormality", (
        r"(?:(?:acute|active|radiographic|cardiopulmonary|intrathoracic|cardiothoracic)\s+(?:or\s+)?)+"
        r"(?:(?:cardiopulmonary|cardiac|pulmonary|thoracic|intrathoracic|chest|lung|radiographic|"
        r"cardiac\s+or\s+pulmonary|pleural|parenchymal)\s+)*"
        r"(?:abnormalit(?:y|ies)|findings?|disease|process(?:es)?|pathology)",
        r"abnormal\s+(?:chest|study|examination|exam|radiographs?)",
    ), {
        "negative": {"No Finding": "positive", "Pneumonia": "negative"},
        "positive": {"No Finding": "negative"},
        "uncertain": {},
    }),
    Concept("lungs_clear", (
        r"(?:the\s+|both\s+)?lungs?\s+(?:are\s+|is\s+|remain\s+|appear\s+|appears\s+)?(?:grossly\s+|now\s+)?"
        r"(?:(?:well[- ]?expanded|expanded|well[- ]?aerated|normally\s+expanded)\s+and\s+)?clear",
        r"(?:well[- ]?expanded\s+and\s+)?clear\s+lungs",
    ), _NORMAL_STUDY_EFFECTS, clause=True),
    Concept("normal_chest", (
        r"normal\s+(?:chest|study|examination|exam|radiographs?|x-?rays?)(?:\s+(?:x-?rays?|radiographs?|films?|study))?",
        r"unremarkable\s+(?:chest|study|examination|exam)",
        r"chest\s+(?:x-?ray\s+|radiographs?\s+)?(?:is\s+|appears\s+)?(?:normal|unremarkable)",
        r"negative\s+chest(?:\s+(?:x-?rays?|radiographs?))?",
    ), _NORMAL_STUDY_EFFECTS),
    # Report-only normal statements (not modelled; used for prose when the model predicts "No Finding").
    Concept("normal_heart", (
        r"(?:heart|cardiac|cardiomediastinal|cardio\s+mediastinal|mediastinal|mediastinum)\b"
        r"(?:(?!\b(?:but|however|although|except|enlarged|enlargement|not|no|without|abnormal|upper|borderline|"
        r"mild|mildly|moderately|markedly|top)\b)[a-z ,/-]){0,60}?"
        r"\b(?:normal|within\s+normal\s+limits|unremarkable)",
        r"normal\s+(?:heart|cardiac|cardiomediastinal|mediastinal)",
    ), {s: {} for s in STATUSES}, kind="normal", clause=True),
    Concept("normal_other", (
        r"(?:pulmonary\s+)?(?:vascularity|vasculature)\s+(?:is\s+|are\s+|appears?\s+)?(?:normal|within\s+normal\s+limits)",
        # bones: "visualized osseous structures ... without acute abnormality" is not a statement about the lungs
        r"(?:bony|osseous|skeletal|bone)\s+(?:structures|thorax)\b(?:(?!\b(?:but|however|although|except|there|lungs?|"
        r"heart|cardiac|effusions?|pneumothora\w*|consolidation|opacit\w*|fractures?|and)\b)[a-z ]){0,60}"
        r"\b(?:abnormalit(?:y|ies)|intact|unremarkable|normal)",
        r"trachea\s+is\s+midline",
    ), {s: {} for s in STATUSES}, kind="normal", clause=True),
    Concept("pleural_effusion", (r"(?:pleural\s+)?effusions?",), _ABNORMAL_EFFECTS, kind="abnormal"),
    Concept("pneumothorax", (r"pneumothora(?:x|ces)",), _ABNORMAL_EFFECTS, kind="abnormal"),
    Concept("cardiomegaly", (
        r"cardiomegaly",
        r"enlarged\s+(?:heart|cardiac\s+silhouette)",
        r"(?:heart|cardiac\s+silhouette)\s+(?:size\s+)?(?:is\s+)?(?:mildly\s+|moderately\s+|markedly\s+)?enlarged",
    ), _ABNORMAL_EFFECTS, kind="abnormal"),
    Concept("edema", (r"(?:pulmonary\s+|interstitial\s+)?edema", r"vascular\s+congestion"), _ABNORMAL_EFFECTS,
            kind="abnormal"),
    Concept("other_abnormality", (
        r"granulomatous\s+(?:disease|infection|process)", r"tubercul(?:ous|osis)(?:\s+infection)?",
        r"nodul(?:e|es|ar)", r"masses", r"mass", r"granulomas?", r"granulomata", r"atelecta(?:sis|tic)",
        r"scarring", r"scar", r"fibrosis", r"emphysema", r"copd", r"hyperinflat\w*", r"hyperexpan\w*",
        r"calcifi\w+", r"fractures?", r"hernia", r"(?:lymph)?adenopathy", r"opacit(?:y|ies)", r"densit(?:y|ies)",
        r"spondylosis", r"degenerative", r"scoliosis", r"kyphosis", r"sternotomy", r"clips?", r"pacemaker",
        r"catheter", r"tubes?", r"stents?", r"surgical", r"postoperative", r"tortu\w+", r"ectatic", r"thickening",
        r"bronchiectasis", r"cavit\w+", r"lesions?", r"metasta\w+", r"malignan\w+", r"tumou?rs?", r"enlarge\w*",
        r"prominen\w+", r"elevat\w+", r"deformit\w+", r"osteopenia", r"blunting", r"low\s+lung\s+volumes?",
        r"abnormal(?:ity|ities)?", r"bullae?", r"upper\s+limits?\s+of\s+normal", r"top\s+normal", r"borderline",
        r"low\s+volumes?", r"crowding", r"hypoinflat\w*", r"hypoventilat\w*", r"poor\s+inspiration", r"cysts?", r"aneurysm\w*", r"effacement", r"collapse",
    ), _ABNORMAL_EFFECTS, kind="abnormal"),
)
CONCEPT_BY_NAME: dict[str, Concept] = {c.name: c for c in CONCEPTS}

# --- Triggers. Longest match wins; triggers may overlap concept spans ("lungs are clear of ...").
_NEG_PRE = (
    "no", "not", "without", "free of", "negative for", "no evidence of", "no evidence for", "no signs of",
    "no sign of", "no findings of", "no finding of", "no radiographic evidence of", "clear of", "absence of",
    "rules out", "ruled out", "resolution of", "nor", "no longer", "there is no", "there are no", "never",
    "no definite", "no convincing", "denies", "denied", "unremarkable for", "no specific features of",
)
_NEG_POST = (
    "has resolved", "have resolved", "resolved", "is not seen", "are not seen", "not seen", "is not identified",
    "are not identified", "not identified", "is absent", "are absent", "not present", "is not present",
    "are not present", "no longer seen", "is no longer seen", "has cleared", "have cleared", "ruled out",
    "is excluded", "excluded",
)
_UNC_PRE = (
    "may represent", "may be", "may reflect", "may indicate", "might", "might represent", "could be",
    "could represent", "could reflect", "could indicate", "possible", "possibly", "probable", "probably",
    "cannot exclude", "can not exclude", "cannot rule out", "can not rule out", "difficult to exclude",
    "difficult to completely exclude", "cannot completely exclude", "cannot entirely exclude", "not excluding",
    "suspicious for", "suspected", "suspect", "concerning for", "concern for", "worrisome for", "suggestive of",
    "suggesting", "questionable", "question of", "questioned", "query", "equivocal", "differential includes",
    "differential diagnosis includes", "differential diagnosis including", "differential including",
    "differential considerations include", "rule out", "r/o", "evaluate for", "eval for", "assess for",
    "evaluation for", "or possibly", "likely represents", "may", "could", "consider", "considered",
)
_UNC_POST = (
    "cannot be excluded", "can not be excluded", "not excluded", "is not excluded", "cannot be ruled out",
    "can not be ruled out", "not ruled out", "is possible", "are possible", "is suspected", "are suspected",
    "is questioned", "not entirely excluded", "cannot be entirely excluded", "is not entirely excluded",
    "not completely excluded", "cannot be completely excluded", "is a consideration", "is considered",
    "another consideration", "a consideration", "in the differential", "is in the differential",
)
_UNC_BI = ("versus", "vs", "?")                       # "atelectasis versus pneumonia": both sides uncertain
_HIST_PRE = ("history of", "hx of", "h/o", "sequela of", "sequelae of", "residua of", "residuals of",
             "status post", "s/p", "previous history of", "known history of")
_HIST_ADJ = ("prior", "previous", "previously", "old", "remote", "healed")   # must be within 2 words
# Pseudo-triggers: contain a trigger word but do not negate ("no change in pneumonia", "65-year-old").
_PSEUDO = ("no change", "no significant change", "no interval change", "not only", "no increase", "not change",
           "gram negative", "gram-negative", "without change", "no new", "not been", "no worse", "unchanged",
           "not necessarily", "year-old", "year old", "years old", "month-old", "day-old", "week-old")
_TERMINATORS = ("but", "however", "although", "though", "which", "except", "aside from", "apart from",
                "other than", "whereas", "yet", "still", "with the exception of", "there is", "there are",
                "there has been", "due to", "secondary to", "otherwise", "while", "and there")
_PUNCT_TERMINATORS = (";", ":", " - ", "(", ")")

_TRIGGER_KINDS: dict[str, frozenset[str]] = {}
for _kind, _phrases in (("pseudo", _PSEUDO), ("neg_pre", _NEG_PRE), ("neg_post", _NEG_POST),
                        ("unc_pre", _UNC_PRE), ("unc_post", _UNC_POST), ("unc_bi", _UNC_BI),
                        ("hist_pre", _HIST_PRE), ("hist_adj", _HIST_ADJ), ("term", _TERMINATORS)):
    for _p in _phrases:
        _TRIGGER_KINDS[_p] = _TRIGGER_KINDS.get(_p, frozenset()) | {_kind}


def _phrase_regex(phrases: Iterable[str]) -> str:
    parts = []
    for p in sorted(set(phrases), key=lambda x: (-len(x), x)):
        esc = re.escape(p).replace(r"\ ", r"\s+")
        if p[0].isalnum():
            esc = r"\b" + esc
        if p[-1].isalnum():
            esc = esc + r"\b"
        parts.append(esc)
    return "|".join(parts)


_TRIGGER_RE = re.compile(_phrase_regex(_TRIGGER_KINDS))
_PUNCT_RE = re.compile("|".join(re.escape(p) for p in _PUNCT_TERMINATORS))
_CONCEPT_RES: tuple[tuple[Concept, re.Pattern[str]], ...] = tuple(
    (c, re.compile(r"\b(?:" + "|".join(c.patterns) + r")\b")) for c in CONCEPTS
)
_WORD_RE = re.compile(r"[a-z0-9]+(?:[-'/][a-z0-9]+)*|\?")


@dataclass(frozen=True)
class Mention:
    """One concept mention in a sentence with its assertion status and the trigger that set it."""

    concept: str
    text: str
    start: int
    end: int
    status: str
    trigger: str | None = None

    def finding_effects(self) -> dict[str, str]:
        """What this mention says about each modelled finding."""
        return dict(CONCEPT_BY_NAME[self.concept].effects.get(self.status, {}))

    def asserts_abnormality(self) -> bool:
        """True for an asserted or hedged abnormality outside the pneumonia family (effusion, nodule, "acute process")."""
        concept = CONCEPT_BY_NAME[self.concept]
        return self.status != "negative" and (concept.kind == "abnormal" or concept.name == "acute_abnormality")


def _lower_same_length(text: str) -> str:
    """Lower-case without changing string length (so spans map back onto the original)."""
    return "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text)


def _select_longest(matches: list[tuple[int, int, str, str]]) -> list[tuple[int, int, str, str]]:
    """Greedy longest-first non-overlapping selection, returned in text order."""
    chosen: list[tuple[int, int, str, str]] = []
    taken: list[tuple[int, int]] = []
    for m in sorted(matches, key=lambda m: (-(m[1] - m[0]), m[0], m[2])):
        if all(m[1] <= s or m[0] >= e for s, e in taken):
            chosen.append(m)
            taken.append((m[0], m[1]))
    return sorted(chosen)


_MAX_SENTENCE_CHARS = 2000


def find_mentions(sentence: str) -> list[Mention]:
    """Concept mentions of one sentence with status, in text order (historical mentions are dropped)."""
    if not sentence:
        return []
    text = _lower_same_length(sentence[:_MAX_SENTENCE_CHARS])
    concept_matches = []
    for concept, rx in _CONCEPT_RES:
        for m in rx.finditer(text):
            if m.end() > m.start():
                concept_matches.append((m.start(), m.end(), concept.name, m.group(0)))
    concepts = _select_longest(concept_matches)
    if not concepts:
        return []
    triggers = []
    for m in _TRIGGER_RE.finditer(text):
        kinds = _TRIGGER_KINDS.get(re.sub(r"\s+", " ", m.group(0)), frozenset())
        triggers.append((m.start(), m.end(), kinds, m.group(0)))
    bounds = sorted([m.start() for m in _PUNCT_RE.finditer(text)]
                    + [t[0] for t in triggers if "term" in t[2]])
    word_starts = [m.start() for m in _WORD_RE.finditer(text)]

    def words_between(a: int, b: int) -> int:
        return sum(1 for w in word_starts if a <= w < b)

    def same_clause(a: int, b: int) -> bool:
        return not any(a <= x < b for x in bounds)

    out: list[Mention] = []
    for start, end, name, matched in concepts:
        concept = CONCEPT_BY_NAME[name]
        neg = unc = hist = None
        for t_start, t_end, kinds, t_text in triggers:
            if "pseudo" in kinds or not (t_end <= start or t_start >= end):
                continue  # pseudo-triggers never apply; a trigger inside the concept's own span is ignored
            before = t_end <= start
            gap = words_between(t_end, start) if before else words_between(end, t_start)
            if not (same_clause(t_start, start) if before else same_clause(end, t_start + 1)):
                continue
            if before:
                if "neg_pre" in kinds and not concept.clause and gap <= _PRE_WINDOW:
                    neg = neg or t_text
                if "unc_pre" in kinds and gap <= _PRE_WINDOW:
                    unc = unc or t_text
                if "hist_pre" in kinds and gap <= _PRE_WINDOW // 2:
                    hist = hist or t_text
                if "hist_adj" in kinds and gap <= 2:
                    hist = hist or t_text
            else:
                if "neg_post" in kinds and gap <= _POST_WINDOW:
                    neg = neg or t_text
                if "unc_post" in kinds and gap <= _POST_WINDOW:
                    unc = unc or t_text
            if "unc_bi" in kinds and gap <= _BI_WINDOW:
                unc = unc or t_text
        if unc:
            status, trig = "uncertain", unc
        elif neg:
            status, trig = "negative", neg
        elif hist:
            continue
        else:
            status, trig = "positive", None
        out.append(Mention(name, sentence[start:end], start, end, status, trig))
    return out


STATUS_RANK = {"positive": 3, "uncertain": 2, "negative": 1}  # CheXpert-style: positive > uncertain > negative


def strongest_statuses(mentions: Iterable[Mention]) -> dict[str, tuple[str, Mention]]:
    """Per finding, the strongest status its mentions give it and the (first) mention that gave it - the one
    aggregation rule of a sentence (labeller, sentence bank, report consistency check)."""
    out: dict[str, tuple[str, Mention]] = {}
    for mention in mentions:
        for finding, status in mention.finding_effects().items():
            if finding not in out or STATUS_RANK[status] > STATUS_RANK[out[finding][0]]:
                out[finding] = (status, mention)
    return out


def label_sentence(sentence: str) -> dict[str, str]:
    """``{finding: 'positive'|'negative'|'uncertain'}`` for the findings this sentence speaks about.

    Within a sentence, positive beats uncertain beats negative (CheXpert-style aggregation).
    """
    return {f: status for f, (status, _) in strongest_statuses(find_mentions(sentence)).items()}


_ENUM_RE = re.compile(r"(?:(?<=^)|(?<=\s))\d{1,2}[.)]\s+(?=[A-Za-z])")
_ABBREV = frozenset({"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "st", "no", "fig", "prof", "dept"})
_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|(?<=[a-z]{2}\.)(?=[A-Z][a-z])|\n+")


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences (drops list enumerators such as "1." and empty pieces)."""
    if not text:
        return []
    text = _ENUM_RE.sub(" ", text.replace("\r", "\n"))
    pieces: list[str] = []
    buf = ""
    last = 0
    for m in _SPLIT_RE.finditer(text):
        piece = text[last:m.start()]
        last = m.end()
        buf = f"{buf} {piece}" if buf else piece
        tail = re.search(r"([A-Za-z.]+)\.$", buf.strip())
        if m.group(0).strip() == "" and "\n" not in m.group(0) and tail and tail.group(1).lower() in _ABBREV \
                and not buf.strip().lower().endswith(" no."):
            continue  # "Dr. Smith": not a sentence end
        pieces.append(buf)
        buf = ""
    rest = text[last:]
    buf = f"{buf} {rest}" if buf else rest
    pieces.append(buf)
    out = []
    for p in pieces:
        p = re.sub(r"\s+", " ", p).strip()
        if re.search(r"[A-Za-z]", p):
            out.append(p)
    return out


def label_text(text: str) -> dict[str, str]:
    """Aggregate finding labels over all sentences of a text (positive > uncertain > negative)."""
    mentions = (m for sentence in split_sentences(text) for m in find_mentions(sentence))
    return {f: status for f, (status, _) in strongest_statuses(mentions).items()}


def binary_labels(text: str, *, uncertain_as_positive: bool = True) -> dict[str, int]:
    """0/1 per finding for evaluation, applying the label hierarchy.

    A pneumonia-family finding is present if any sentence asserts it (uncertain counts as present by default,
    CheXpert "U-ones"); a subtype or COVID-19 implies Pneumonia. "No Finding" is present only if some sentence
    states (or, with U-ones, hedges) a normal study, no sentence asserts or hedges an abnormality, and no
    pneumonia-family finding is present.
    """
    present = {"positive", "uncertain"} if uncertain_as_positive else {"positive"}
    out = {f: 0 for f in FINDINGS}
    nf_pos = nf_against = False
    for sentence in split_sentences(text):
        mentions = find_mentions(sentence)
        nf_against |= any(m.asserts_abnormality() for m in mentions)
        for f, (s, _) in strongest_statuses(mentions).items():
            if f == "No Finding":
                nf_pos |= s in present
                nf_against |= s == "negative"
            elif s in present:
                out[f] = 1
    if out["COVID-19"] or out["Bacterial pneumonia"] or out["Viral pneumonia"]:
        out["Pneumonia"] = 1
    if out["COVID-19"]:
        out["Viral pneumonia"] = 1
    out["No Finding"] = int(nf_pos and not nf_against and not any(out[f] for f in FINDINGS if f != "No Finding"))
    return out


__all__ = [
    "CONCEPTS", "CONCEPT_BY_NAME", "Concept", "LABELER_VERSION", "Mention", "STATUSES", "STATUS_RANK", "binary_labels",
    "find_mentions", "label_sentence", "label_text", "split_sentences", "strongest_statuses",
]
