"""Read a clinical note as a clinician does: concepts (symptoms, signs, vital signs, tests, context) with their
assertion (present, absent, possible, historical, about someone else, hypothetical).

The assertion is medspaCy's ConText (a maintained implementation of Harkema et al.'s ConText algorithm, the
NegEx family); the concepts are medspaCy target rules below. Vital signs and laboratory values are numbers, read by
the small patterns in ``_MEASUREMENTS`` and compared with the cut-off of the evidence they stand for (``SPO2 88 %``
is hypoxaemia, ``SpO2 99 %`` is its absence).

Privacy: PyRuSH (medspaCy's sentence splitter) logs every token at DEBUG level through loguru. ``_build`` disables
loguru for every medspaCy/PyRuSH module before the first note is read, so a note never reaches a log.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass, field

# assertion values (what a concept says about *this* patient *now*)
PRESENT, ABSENT, POSSIBLE, HISTORICAL, OTHER_PERSON, HYPOTHETICAL = (
    "present", "absent", "possible", "historical", "other person", "hypothetical")

# concept key -> (display name, phrases). Matching is case-insensitive on whole tokens. A phrase that carries its
# own negation ("afebrile") is listed in _SELF_NEGATING.
CONCEPT_PHRASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fever": ("fever", ("fever", "fevers", "febrile", "pyrexia", "pyrexial", "high temperature", "feverish",
                        "afebrile", "apyrexial")),
    "cough": ("cough", ("cough", "coughing", "coughs")),
    "productive_cough": ("productive cough", ("productive cough", "sputum", "phlegm", "purulent sputum",
                                              "sputum production", "wet cough")),
    "dyspnea": ("shortness of breath", ("dyspnea", "dyspnoea", "dyspneic", "dyspnoeic", "shortness of breath",
                                        "short of breath", "sob", "breathless", "breathlessness",
                                        "difficulty breathing", "difficulty in breathing", "trouble breathing")),
    "chest_pain": ("chest pain", ("chest pain", "pleuritic chest pain", "pleuritic pain", "pleuritic")),
    "chills": ("chills", ("chills", "rigors", "rigor", "shivering", "shivers")),
    "myalgia": ("myalgia", ("myalgia", "myalgias", "muscle aches", "muscle pain", "body aches")),
    "sore_throat": ("sore throat", ("sore throat", "pharyngitis", "throat pain")),
    "rhinorrhea": ("runny nose", ("rhinorrhea", "rhinorrhoea", "runny nose", "coryza", "coryzal")),
    "anosmia": ("loss of smell or taste", ("anosmia", "ageusia", "dysgeusia", "loss of smell", "loss of taste",
                                           "lost sense of smell", "loss of smell and taste",
                                           "loss of taste and smell", "lost my sense of smell",
                                           "lost her sense of smell",
                                           "lost his sense of smell", "lost their sense of smell",
                                           "loss of sense of smell", "cannot smell", "can't smell",
                                           "lost sense of taste", "loss of sense of taste")),
    "crackles": ("crackles", ("crackles", "crackle", "crepitations", "crepitation", "creps", "rales", "rale")),
    "decreased_breath_sounds": ("decreased breath sounds", ("decreased breath sounds", "reduced breath sounds",
                                                            "diminished breath sounds", "reduced air entry",
                                                            "decreased air entry", "diminished air entry")),
    "dullness_percussion": ("dullness to percussion", ("dullness", "dull to percussion", "dullness to percussion",
                                                       "stony dull")),
    "egophony": ("egophony", ("egophony", "aegophony")),
    "bronchial_breath_sounds": ("bronchial breath sounds", ("bronchial breathing", "bronchial breath sounds")),
    "increased_work_of_breathing": ("increased work of breathing", (
        "increased work of breathing", "respiratory distress", "labored breathing", "laboured breathing",
        "grunting", "nasal flaring", "flaring", "retractions", "recessions", "recession", "intercostal recession",
        "subcostal recession", "subcostal retractions", "intercostal retractions", "chest indrawing", "indrawing",
        "tracheal tug", "head bobbing")),
    "tachypnea": ("tachypnoea", ("tachypnea", "tachypnoea", "tachypneic", "tachypnoeic", "fast breathing",
                                 "rapid breathing")),
    "tachycardia": ("tachycardia", ("tachycardia", "tachycardic")),
    "hypoxemia": ("hypoxaemia", ("hypoxia", "hypoxemia", "hypoxaemia", "hypoxic", "hypoxemic", "hypoxaemic",
                                 "desaturation", "desaturating", "desaturated", "low oxygen saturation")),
    "normal_vital_signs": ("normal vital signs", ("normal vital signs", "vital signs normal", "vitals normal",
                                                  "normal vitals", "vitals within normal limits", "vitals wnl",
                                                  "normal observations", "observations normal", "obs normal",
                                                  "obs within normal limits", "obs all within normal limits",
                                                  "observations within normal limits", "obs wnl", "obs all normal",
                                                  "vital signs within normal limits", "vital signs wnl")),
    "normal_lung_exam": ("normal lung examination", ("lungs clear", "chest clear", "clear chest",
                                                     "clear to auscultation", "lungs are clear", "chest is clear",
                                                     "normal breath sounds", "good air entry", "no added sounds",
                                                     "vesicular breath sounds", "normal chest examination",
                                                     "good air entry bilaterally", "lung fields clear")),
    "respiratory_symptoms": ("respiratory symptoms", ("respiratory symptoms", "respiratory complaints",
                                                      "chest symptoms", "respiratory illness")),
    "asymptomatic": ("asymptomatic", ("asymptomatic",)),
    "crp_high": ("raised CRP", ("raised crp", "elevated crp", "high crp", "crp raised", "crp elevated")),
    "procalcitonin_high": ("raised procalcitonin", ("raised procalcitonin", "elevated procalcitonin",
                                                    "high procalcitonin", "procalcitonin raised")),
    "sars_cov_2_test": ("SARS-CoV-2 test", ("sars-cov-2 pcr", "covid pcr", "covid-19 pcr", "covid19 pcr",
                                            "sars-cov-2 rt-pcr", "covid swab", "covid-19 swab", "covid test",
                                            "covid-19 test", "sars-cov-2 test", "rt-pcr", "pcr", "naat",
                                            "nasopharyngeal swab", "swab")),
    "sars_cov_2_antigen": ("SARS-CoV-2 antigen test", ("antigen test", "rapid antigen", "rapid antigen test",
                                                       "lateral flow", "lateral flow test", "lft", "rat")),
    # not plain "coronavirus": SARS (2003) and MERS are coronaviruses too
    "covid19": ("COVID-19", ("covid-19", "covid", "covid19", "sars-cov-2", "sars-cov2", "sars cov 2",
                             "novel coronavirus", "2019-ncov", "ncov", "coronavirus disease 2019")),
    "influenza_test": ("influenza test", ("influenza test", "flu test", "flu swab", "influenza swab",
                                          "influenza pcr", "rapid influenza test")),
    "pneumonia": ("pneumonia (named)", ("pneumonia", "pneumonitis", "chest infection", "lower respiratory tract "
                                        "infection", "lrti", "consolidation")),
    # context (shown; no likelihood ratio): why the film was taken
    "pre_operative": ("pre-operative", ("pre-op", "preop", "pre-operative", "preoperative", "pre op",
                                        "pre-anaesthetic", "pre-anesthetic", "before surgery")),
    "screening": ("screening", ("screening", "screen", "routine", "annual", "immigration", "pre-employment",
                                "employment", "check-up", "checkup", "medical examination", "visa")),
    "follow_up": ("follow-up", ("follow-up", "follow up", "f/u", "followup", "interval film")),
    "trauma": ("trauma", ("trauma", "fracture", "fall", "injury", "rta", "collision")),
    "line_check": ("line / tube position", ("line placement", "picc", "central line", "ng tube", "ngt",
                                            "et tube", "ett", "tube position", "line position")),
}
_SELF_NEGATING = {"afebrile", "apyrexial"}
NORMAL_STATEMENTS = {"asymptomatic", "normal_lung_exam", "normal_vital_signs"}
# the reader's cost grows with concepts x cues (a 20,000-character "no fever, no fever, ..." takes ~11 s here, under
# the reader's lock); clinical indications are far shorter, so only the first MAX_READ_CHARS are read (with a warning)
MAX_READ_CHARS = 3_000
CONTEXT_CONCEPTS = ("pre_operative", "screening", "follow_up", "trauma", "line_check")

# ConText rules added to medspaCy's defaults (clinical shorthand the defaults do not cover)
_TESTS = {"SARS_COV_2_TEST", "SARS_COV_2_ANTIGEN", "COVID19", "INFLUENZA_TEST"}
_EXTRA_CONTEXT = (  # (phrase, category, direction, max scope in tokens or None[, only these concepts])
    ("resolved", "HISTORICAL", "BACKWARD", 3), ("now resolved", "HISTORICAL", "BACKWARD", 3),
    # a result word after a test negates the test only ("Pt asymptomatic, LFT negative": not the asymptomatic)
    ("not detected", "NEGATED_EXISTENCE", "BACKWARD", 4, _TESTS),
    ("negative", "NEGATED_EXISTENCE", "BACKWARD", 4, _TESTS),
    ("neg", "NEGATED_EXISTENCE", "BACKWARD", 3, _TESTS), ("-ve", "NEGATED_EXISTENCE", "BACKWARD", 3, _TESTS),
    ("nil", "NEGATED_EXISTENCE", "FORWARD", 4), ("pending", "HYPOTHETICAL", "BACKWARD", 3),
    ("awaited", "HYPOTHETICAL", "BACKWARD", 3), ("awaiting", "HYPOTHETICAL", "FORWARD", 4),
    ("sent", "HYPOTHETICAL", "BACKWARD", 3), ("?", "POSSIBLE_EXISTENCE", "FORWARD", 3),
    ("query", "POSSIBLE_EXISTENCE", "FORWARD", 3), ("r/o", "POSSIBLE_EXISTENCE", "FORWARD", 4),
    ("assess for", "POSSIBLE_EXISTENCE", "FORWARD", 4), ("evaluate for", "POSSIBLE_EXISTENCE", "FORWARD", 4),
    ("exposure to", "FAMILY", "FORWARD", 4), ("exposed to", "FAMILY", "FORWARD", 4),
    ("contact with", "FAMILY", "FORWARD", 4), ("contact of", "FAMILY", "FORWARD", 4),
    ("sibling", "FAMILY", "FORWARD", 5), ("siblings", "FAMILY", "FORWARD", 5),
    ("household", "FAMILY", "FORWARD", 4), ("classmates", "FAMILY", "FORWARD", 5),
    (";", "TERMINATE", "TERMINATE", None), (".", "TERMINATE", "TERMINATE", None),
    ("patient", "TERMINATE", "TERMINATE", None),
    ("pt", "TERMINATE", "TERMINATE", None), ("but", "TERMINATE", "TERMINATE", None),
)
_NOT_A_DIAGNOSIS = re.compile(r"\b(vaccin\w*|booster|jab|immuni[sz]\w*|screen\w*|precautions?|protocol|"
                               r"pandemic|lockdown|isolation ward|ppe)\b", re.I)
_EXPOSURE = re.compile(r"\b(contacts?|exposed|exposure|outbreaks?|cases|risk areas?|travell?ed|travell?ing|"
                       r"epidemic|cohabit\w*|household|colleague|family members?)\b", re.I)
_POSITIVE_RESULT = re.compile(r"(?<![\w-])(positive|pos|detected|\+ve|\+|confirmed|reactive)(?![\w])", re.I)


@dataclass(frozen=True)
class Concept:
    """One concept the note states, where, and what it says about this patient now."""

    key: str                       # CONCEPT_PHRASES key, or a measurement key (e.g. "hypoxemia" from "SpO2 88 %")
    text: str                      # the words of the note that carry it
    start: int
    end: int
    assertion: str                 # PRESENT | ABSENT | POSSIBLE | HISTORICAL | OTHER_PERSON | HYPOTHETICAL
    cue: tuple[int, int] | None = None   # the words that set the assertion ("no", "denies", "mother"), if any
    value: float | None = None           # a measured value (SpO2 88 -> 88.0), in the unit of ``unit``
    unit: str | None = None

    def phrase(self, text: str) -> str:
        """The concept with the cue that set its assertion, as the note says it ("no respiratory symptoms",
        "PCR negative"), from the note's ``text``."""
        if self.cue is None:
            return self.text
        cue = text[self.cue[0]:self.cue[1]]
        return f"{cue} {self.text}" if self.cue[0] < self.start else f"{self.text} {cue}"

    @property
    def name(self) -> str:
        return CONCEPT_PHRASES[self.key][0] if self.key in CONCEPT_PHRASES else self.key.replace("_", " ")


@dataclass(frozen=True)
class NoteReading:
    concepts: tuple[Concept, ...]
    age_years: float | None = None
    population: str | None = None        # "adult" | "child" when the note says (age, "infant", "man", ...)
    context: tuple[str, ...] = field(default=())
    read_chars: int | None = None        # set when the note was longer than MAX_READ_CHARS: how much was read


# ------------------------------------------------------------------------------------------------ measurements
_NUM = r"(\d{1,3}(?:[.,]\d{1,2})?)"
_SEP = r"\s*(?:[:=]|of|was|is|at|~)?\s*"
_MEASUREMENTS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("temperature", re.compile(r"\b(?:t|temp|temperature|tmax|t\s?max|fever(?:\s+of)?|febrile(?:\s+to)?)" + _SEP
                               + _NUM + r"\s*(°\s*[cf]|deg(?:rees)?\s*[cf]?|[cf]\b)?", re.I), "°C"),
    ("temperature", re.compile(_NUM + r"\s*°\s*([cf])\b", re.I), "°C"),
    ("spo2", re.compile(r"\b(?:spo2|sp02|sao2|sa02|o2\s?sats?|oxygen\s+saturations?|saturations?|sats?|pulse\s?ox"
                        r"(?:imetry)?|spo₂)" + _SEP + _NUM + r"\s*%?", re.I), "%"),
    ("resp_rate", re.compile(r"\b(?:rr|resp(?:iratory)?\s*rate|resps?|respirations?|breathing\s+rate)" + _SEP + _NUM
                             + r"(?:\s*/\s*min|\s*bpm|\s*breaths)?", re.I), "/min"),
    ("heart_rate", re.compile(r"\b(?:hr|heart\s*rate|pulse(?:\s*rate)?)" + _SEP + _NUM + r"(?:\s*/\s*min|\s*bpm)?",
                              re.I), "/min"),
    ("crp", re.compile(r"\bcrp" + _SEP + _NUM + r"\s*(?:mg\s*/\s*l)?", re.I), "mg/L"),
    ("procalcitonin", re.compile(r"\b(?:pct|procalcitonin)" + _SEP + _NUM + r"\s*(?:ng\s*/\s*ml)?", re.I), "ng/mL"),
)

_AGE = (
    (re.compile(r"\b(\d{1,3})\s*(?:-|\s)?\s*(?:years?|yrs?|y/?o|y\.o\.|yo|year-old|-year-old)\b", re.I), 1.0),
    (re.compile(r"\b(\d{1,2})\s*(?:-|\s)?\s*(?:months?|mos?|mo\.?)\b", re.I), 1 / 12),
    (re.compile(r"\b(\d{1,2})\s*(?:-|\s)?\s*(?:weeks?|wks?)\b", re.I), 1 / 52),
    (re.compile(r"\b(\d{1,3})\s?(?:m|f|male|female|yo\s?m|yo\s?f)\b", re.I), 1.0),     # "58M", "58 F"
    (re.compile(r"\b(\d{1,2})/12\b(?![/\d])"), 1 / 12),                    # UK notation: "18/12 old" = 18 months
    (re.compile(r"\b(\d{1,2})/52\b(?![/\d])"), 1 / 52),                    # "6/52" = 6 weeks
    (re.compile(r"\b(?:aged?|age:)\s*(\d{1,3})\b", re.I), 1.0),
)
_DURATION = re.compile(r"\b(for|since|over|past|last|previous|x|after|within|in)\s*(the\s+)?$", re.I)
_CHILD_WORDS = re.compile(r"\b(infant|baby|toddler|child|boy|girl|neonate|newborn|paediatric|pediatric|kid|"
                          r"preschool|schoolchild)\b", re.I)
_ADULT_WORDS = re.compile(r"\b(man|woman|gentleman|lady|adult|elderly|retired|pregnant|smoker|pack[- ]years?)\b",
                          re.I)


def read_age(text: str) -> tuple[float | None, str | None]:
    """(age in years or None, "adult" | "child" | None) from the note's own words."""
    for pattern, scale in _AGE:
        for m in pattern.finditer(text):
            if _DURATION.search(text[max(0, m.start() - 12):m.start()]):
                continue                                   # "cough for 3 weeks" is a duration, not an age
            age = float(m.group(1)) * scale
            if 0 <= age <= 120:
                return age, ("child" if age < 18 else "adult")
    if _CHILD_WORDS.search(text):
        return None, "child"
    if _ADULT_WORDS.search(text):
        return None, "adult"
    return None, None


def _number(s: str) -> float:
    return float(s.replace(",", "."))


def read_measurements(text: str) -> list[tuple[str, float, int, int]]:
    """(kind, value in the canonical unit, start, end) for each vital sign / laboratory value in ``text``."""
    out: list[tuple[str, float, int, int]] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern, _unit in _MEASUREMENTS:
        for m in pattern.finditer(text):
            if any(m.start() < e and s < m.end() for s, e in taken):
                continue
            value = _number(m.group(1))
            if kind == "temperature":
                unit = (m.group(2) or "").lower() if m.lastindex and m.lastindex >= 2 else ""
                if "f" in unit or value > 50:          # Fahrenheit, written or implied (101.3)
                    value = (value - 32) * 5 / 9
                if not 30 <= value <= 45:
                    continue
            elif kind == "spo2" and not 40 <= value <= 100:
                continue
            elif kind in ("resp_rate", "heart_rate") and not 4 <= value <= 300:
                continue
            out.append((kind, value, m.start(), m.end()))
            taken.append((m.start(), m.end()))
    return sorted(out, key=lambda t: t[2])


# ------------------------------------------------------------------------------------------------ medspaCy
_ASSERTIONS = (("is_hypothetical", HYPOTHETICAL), ("is_family", OTHER_PERSON), ("is_historical", HISTORICAL),
               ("is_uncertain", POSSIBLE), ("is_negated", ABSENT))


class NotesReader:
    """medspaCy pipeline (PyRuSH sentences, target rules, ConText), built once per process on first use."""

    def __init__(self) -> None:
        self._nlp = None
        self._lock = threading.Lock()

    def _build(self):
        try:
            from loguru import logger as loguru_logger
        except ImportError:  # pragma: no cover - loguru comes with PyRuSH
            loguru_logger = None
        if loguru_logger is not None:
            for module in ("PyRuSH", "medspacy", "PyFastNER", "quicksectx"):
                loguru_logger.disable(module)      # PyRuSH logs every token of the note at DEBUG
        from medmm.torch_free import hide_torch

        try:
            with hide_torch():   # spaCy's thinc imports torch (2.6 s) for layers this rule-based pipeline never uses
                import spacy
                import medspacy.components  # noqa: F401  registers the medspacy_* factories
                from medspacy.context import ConTextRule
                from medspacy.ner import TargetRule
        except ImportError as e:  # clear message instead of a traceback deep inside a request
            raise RuntimeError("Reading clinical notes needs medspaCy (pip install --no-deps medspacy==1.3.1 "
                               "PyRuSH==1.0.13 PyFastNER quicksectx pysbd loguru; see requirements-nlp.txt): "
                               f"{e}") from e
        # spaCy warns (W036) on every note that one of ConText's matchers has no patterns; it is empty by design
        warnings.filterwarnings("ignore", message=r"\[W036\]", category=UserWarning)
        nlp = spacy.blank("en")
        nlp.add_pipe("medspacy_pyrush")
        matcher = nlp.add_pipe("medspacy_target_matcher")
        matcher.add([TargetRule(phrase, key.upper()) for key, (_, phrases) in CONCEPT_PHRASES.items()
                     for phrase in phrases])
        context = nlp.add_pipe("medspacy_context")
        context.add([ConTextRule(rule[0], rule[1], direction=rule[2], max_scope=rule[3],
                                 allowed_types=rule[4] if len(rule) > 4 else None) for rule in _EXTRA_CONTEXT])
        return nlp

    def _doc(self, text: str):
        with self._lock:
            if self._nlp is None:
                self._nlp = self._build()
            return self._nlp(text)

    def read(self, text: str | None) -> NoteReading:
        if not text or not text.strip():
            return NoteReading(())
        read_chars = None
        if len(text) > MAX_READ_CHARS:
            cut = text.rfind(" ", 0, MAX_READ_CHARS)
            text = text[:cut if cut > MAX_READ_CHARS // 2 else MAX_READ_CHARS]
            read_chars = len(text)
        doc = self._doc(text)
        concepts: list[Concept] = []
        for ent in doc.ents:
            key = ent.label_.lower()
            assertion, cue = PRESENT, None
            for attr, value in _ASSERTIONS:
                if getattr(ent._, attr):
                    assertion = value
                    break
            if ent._.modifiers:
                a, b = ent._.modifiers[0].modifier_span
                cue = (doc[a].idx, doc[b - 1].idx + len(doc[b - 1]))
            if ent.text.lower() in _SELF_NEGATING:
                assertion = ABSENT if assertion == PRESENT else assertion
            if key in NORMAL_STATEMENTS and assertion == ABSENT:
                # a list negation runs on over commas ("no recession, chest clear"); nobody writes "no chest clear"
                # and "chest not clear" is not a match, so a normal statement is never negated
                assertion, cue = PRESENT, None
            concepts.append(Concept(key, ent.text, ent.start_char, ent.end_char, assertion, cue))
        concepts = _resolve_tests(concepts, text, doc)
        for kind, value, start, end in read_measurements(text):
            # a measurement inherits the assertion of the sentence it sits in only for "historical"/"other person"
            concepts.append(Concept(kind, text[start:end], start, end, PRESENT, None, round(value, 2),
                                    dict((k, u) for k, _, u in _MEASUREMENTS)[kind]))
        age, population = read_age(text)
        context = tuple(dict.fromkeys(c.key for c in concepts if c.key in CONTEXT_CONCEPTS and c.assertion == PRESENT))
        return NoteReading(tuple(sorted(concepts, key=lambda c: c.start)), age, population, context, read_chars)


def _resolve_tests(concepts: list[Concept], text: str, doc) -> list[Concept]:
    """A SARS-CoV-2 test (or a named COVID-19) takes its result from its sentence: "PCR negative" / "not detected"
    (ConText: absent), "PCR positive" / "confirmed" (present), no result stated (``possible``: not evidence).
    A test named without saying which disease it tests for counts as a SARS-CoV-2 test only when COVID-19 is
    named in the same sentence."""
    sentences = [(s.start_char, s.end_char) for s in doc.sents]

    def sentence_of(c: Concept) -> tuple[int, int]:
        return next(((s, e) for s, e in sentences if s <= c.start < e), (0, len(text)))

    out: list[Concept] = []
    covid_sentences = {sentence_of(c) for c in concepts if c.key == "covid19"}
    tested = {sentence_of(c) for c in concepts if c.key in ("sars_cov_2_test", "sars_cov_2_antigen")}
    for c in concepts:
        if c.key in ("sars_cov_2_test", "sars_cov_2_antigen", "covid19", "influenza_test"):
            s, e = sentence_of(c)
            if c.key == "sars_cov_2_test" and c.text.lower() in ("pcr", "rt-pcr", "naat", "nasopharyngeal swab",
                                                                 "swab") and (s, e) not in covid_sentences:
                continue                                  # a PCR for something else
            if c.key == "covid19" and ((s, e) in tested or _NOT_A_DIAGNOSIS.search(text[s:e])):
                continue                     # the test carries the sentence's result / a vaccine or a screen
            if c.key == "covid19" and _EXPOSURE.search(text[s:e]):
                # "denies contact with COVID-19 patients" is neither a diagnosis nor a negative test
                c = Concept(c.key, c.text, c.start, c.end, OTHER_PERSON, c.cue)
            if c.assertion == PRESENT:
                window = text[c.end:e] if c.key != "covid19" else text[s:e]
                if c.key != "covid19" and not _POSITIVE_RESULT.search(window):
                    c = Concept(c.key, c.text, c.start, c.end, POSSIBLE, c.cue)     # result not stated
        out.append(c)
    return out


_READER = NotesReader()


def read_note(text: str | None) -> NoteReading:
    """Concepts, assertions, measurements, age and context of one note (thread-safe; the pipeline is shared)."""
    return _READER.read(text)

