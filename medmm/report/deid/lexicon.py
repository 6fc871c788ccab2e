"""The words de-identification reads names by: the name lexicon and the word lists that override it.

* ``lexicon()`` -> (first names, surnames, common English words) from ``lexicon.json.gz`` (built by
  ``scripts/build_name_lexicon.py`` from Faker's multi-locale name lists minus ordinary clinical/English words).
* Word lists: words never taken for a name (eponyms, organisms, report words, abbreviations), given names that are
  ordinary words, relatives, titles, labels, name particles, places that may stay, facility words.
* How a word is read: ``WORD`` (letters with inner apostrophes, dots, hyphens), ``fold`` (accents and case off),
  ``is_cap`` / ``is_upper``, ``sentence_start``.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import unicodedata
from pathlib import Path

LEXICON_PATH = Path(__file__).resolve().parent / "lexicon.json.gz"


@functools.lru_cache(maxsize=1)
def lexicon() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    data = json.loads(gzip.decompress(LEXICON_PATH.read_bytes()))
    first = frozenset(data["first"]) - NOT_NAMES
    last = frozenset(data["last"]) - NOT_NAMES
    return first, last, frozenset(data.get("common", ()))


def fold(word: str) -> str:
    return unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode().lower().replace("'", "").replace("’", "")


# Words that must never be taken for a name even when a name list has them (eponyms, organisms, report words,
# clinical abbreviations, credentials).
NOT_NAMES = frozenset("""
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
WORD_NAMES = frozenset("""
hope grace faith joy will rose mark dawn summer autumn april may june jean ruby pearl amber crystal destiny
heather holly hazel ivy lily daisy iris violet olive ginger penny sandy robin carol eve skye sky rain river storm
patience mercy charity honor honour prudence constance chastity precious blessing sunny rusty dusty
bill bob rob art guy rich frank grant chase hunter dean drew gene ken lance max norm ray rod wade pat sue
young king hill wood stone rice fox price cash love moody strong swift short sharp brown green white black gray
grey long little small young major miles cliff glen dale earl carter cooper mason taylor parker page bishop hall
""".split())
# of those, the ones that may be lower case after a relative ("daughter grace"), i.e. not verbs or adjectives
WORD_NAMES_LOWER = frozenset("""
grace faith hope joy rose dawn summer autumn ruby pearl amber crystal destiny heather holly hazel ivy lily daisy
iris violet olive patience mercy charity precious blessing
""".split())
# relatives and carers: the capitalised word right after them is a name even when it is an ordinary word
RELATIVES = frozenset("""
wife husband son daughter mother father mom mum dad brother sister friend partner spouse fiance fiancee uncle aunt
cousin grandson granddaughter grandmother grandfather grandma grandpa granny nan nanna neighbour neighbor niece nephew
carer caregiver guardian stepson stepdaughter stepmother stepfather boyfriend girlfriend
""".split())
# dotted initials that are abbreviations ("A.M.", "U.S.")
NOT_INITIALS = frozenset("am pm us uk nb ie eg iv po pr sc im bp hr rr er ed or ct mr dr pa ap od os ou cc ml mg "
                          "ne nw se sw dc do md rn np gp ok".split())
# Countries and US states may stay (HIPAA Safe Harbor removes geographic units smaller than a state).
PLACES_OK = frozenset("""
china france spain italy germany iran iraq japan korea vietnam india pakistan bangladesh usa america england
scotland wales ireland britain canada australia brazil mexico egypt turkey greece portugal netherlands belgium
switzerland austria sweden norway denmark finland poland russia ukraine israel taiwan thailand singapore malaysia
indonesia philippines nigeria kenya ethiopia argentina chile peru colombia europe asia africa washington california
texas florida georgia virginia carolina michigan ohio indiana illinois york jersey massachusetts pennsylvania
lombardy hubei wuhan
each every some another several many few both either neither such kit baxter prismaflex gerd ground-glass
minor women men woman man girl boy child infant baby adult elderly
""".split())
EPONYM_NEXT = re.compile(
    r"(?:['’]s)?\s+(?:disease|syndrome|palsy|sign|lymphoma|sarcoma|tumou?r|test|score|criteria|classification|scale|"
    r"phenomenon|reflex|manoeuvre|maneuver|catheter|tube|fracture|nodes?|law|effect|triad|ulcer|operation|procedure|"
    r"type|stage|aneurysm|hernia|cells?|membrane|lines?|space|angle|method|position|view|respiration|breathing|"
    r"rule|equation|formula|index|ratio|phase|cyst|body|bodies|disorder|deformity|infection|pneumonia|bacilli?|"
    r"\w+(?:ectomy|otomy|ostomy|plasty|pexy|oscopy))\b"
    r"|\s+[A-Z]?\d{1,2}(?![\w/.:-])", re.I)   # a device model after a brand: "HeartMate 3", "Hamilton C6"
MONTH_WORDS = ("jan", "january", "feb", "february", "mar", "march", "apr", "april", "may", "jun", "june", "jul",
                "july", "aug", "august", "sep", "sept", "september", "oct", "october", "nov", "november", "dec",
                "december")
WORD = re.compile(r"[^\W\d_]+(?:['’.-][^\W\d_]+)*")
TITLES = frozenset("mr mrs ms miss mx dr prof doctor sir dame".split())
TITLE_CASE_SENSITIVE = frozenset({"MS"})  # multiple sclerosis, not Ms
# labels after which the next words are a name (lower-case words too when they are in the lexicon)
LABELS = frozenset(("patient pt name wife husband son daughter mother father mom mum dad brother sister friend "
                     "partner spouse fiance fiancee nurse carer caregiver guardian uncle aunt cousin grandson "
                     "granddaughter grandmother grandfather neighbour neighbor attending physician radiologist "
                     "surgeon consultant registrar resident signed dictated per gp phys "
                     "nok kin").split())


def is_cap(word: str) -> bool:
    return word[:1].isupper() and not word.isupper()


def is_upper(word: str) -> bool:
    return word.isupper() and len(word) >= 2


def sentence_start(text: str, pos: int) -> bool:
    before = text[:pos].rstrip()
    return not before or before[-1] in ".!?:;\n"


# common nouns that describe the person before an age ("Child, 4 years", "Boy Smith, 6 yo"): never a name there
PERSON_NOUNS = frozenset("""
child boy girl infant baby toddler neonate newborn kid youth lad lass teen teenager adolescent adult man woman male
female gentleman lady schoolboy schoolgirl twin elderly
""".split())
PARTICLES = frozenset("van der den de da di del della von le la los las du dos das bin ibn al el ten ter".split())

FACILITY_WORDS = frozenset("st saint general royal memorial county regional community medical university childrens "
                            "children mount mt city national central district veterans university teaching "
                            "chemical".split())
