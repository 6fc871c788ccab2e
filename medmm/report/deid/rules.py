"""The pattern rules of de-identification: dates, phones, IDs, addresses, places, rooms, e-mail, URLs, network and
device identifiers, institutions, letters of non-Latin scripts, and ages over 89 (HIPAA Safe Harbor: "90 or older").

Each rule is ``(tag, pattern, group)``; ``rule_spans`` runs them. All patterns are linear-time on the capped input
(no nested quantifiers over the same characters).
"""

from __future__ import annotations

import re

from medmm.report.deid.lexicon import (FACILITY_WORDS, LABELS, MONTH_WORDS, NOT_NAMES, PLACES_OK, fold, lexicon,
                                       sentence_start)
from medmm.report.deid.spans import Span

_MONTHS_I = "(?:" + "|".join(sorted(MONTH_WORDS, key=len, reverse=True)) + ")"
# partial dates need a capitalised month ("2 may be" is not a date)
_MONTHS_CAP = "(?:" + "|".join(sorted({f(m) for m in MONTH_WORDS for f in (str.title, str.upper)}, key=len,
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
RULES: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("REDACTED", _rx(r"X{4,}"), 0),
    ("EMAIL", _rx(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+"), 0),
    ("URL", _rx(r"\b(?:https?://|www\.)\S+", re.I), 0),
    ("ID", _rx(r"\b\d{3}-\d{2}-\d{4}\b"), 0),                                                         # SSN
    # network and device identifiers (HIPAA: IP addresses, device identifiers and serial numbers)
    ("IP", _rx(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"), 0),
    ("DEVICE", _rx(r"(?<![\w:-])[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}(?![\w:-])"), 0),                 # MAC
    ("IP", _rx(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,7}:?(?::?[0-9A-Fa-f]{1,4}){1,7}(?![\w:])"), -2),    # IPv6 (checked)
    ("DEVICE", _rx(r"\b(?:serial(?:\s+(?:no\.?|number|#))?|s/n|sn|device\s+(?:id|no\.?|number)|imei|udi|"
                   r"lot(?:\s+(?:no\.?|number|#))|model\s+(?:no\.?|number)|workstation|host(?:name)?|terminal|"
                   r"asset(?:\s+(?:tag|no\.?|number|#))?)\s*[:#=-]?\s*"
                   r"([A-Za-z0-9][A-Za-z0-9/-]*\d[A-Za-z0-9/-]*)", re.I), 1),
    ("ID", _rx(r"(?<![\w.])\d{1,6}(?:\.[A-Za-z0-9]{1,20}){4,}(?![\w.])"), 0),                       # DICOM UID
    ("DEVICE", _rx(r"(?<![\w.@/-])[A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9-]{1,63})*\.(?:local|lan|internal|intranet|"
                   r"corp|localdomain|home\.arpa)(?![\w-])|(?<![\w.@/-])[A-Za-z0-9][A-Za-z0-9-]{0,62}"
                   r"(?:\.[A-Za-z0-9-]{1,63}){2,}\.(?:com|org|net|edu|gov|uk|io)(?![\w-])", re.I), 0),   # host names
    # dates
    ("DATE", _rx(r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?\b"), 0),
    ("DATE", _rx(r"\b\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})\b"), 0),
    ("DATE", _rx(rf"\b\d{{1,2}}{_ORD}[\s-]+(?:of\s+)?{_MONTHS_I}\.?,?[\s-]+\d{{2,4}}\b", re.I), 0),
    ("DATE", _rx(rf"\b{_MONTHS_I}\.?[\s-]+\d{{1,2}}{_ORD},?[\s-]+\d{{2,4}}\b", re.I), 0),
    ("DATE", _rx(rf"\b{_MONTHS_I}\.?,?\s+(?:of\s+)?\d{{4}}\b", re.I), 0),
    ("DATE", _rx(rf"\b\d{{1,2}}{_ORD}(?:\s+of)?(?:\s+|-){_MONTHS_CAP}\b\.?"), 0),                   # 5 Jan, 09-Jan
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
    # national health and insurance numbers with their scheme's name ("Medicare 2953 41708 1", "NHI ZKC4471")
    ("ID", _rx(r"\b(?:medicare|medicaid|nhi|ihi|chi|pps|nino|ahv|avs|sozialversicherung|carte\s+vitale|nir|bsn|"
               r"personnummer|cpr|hkid|nric|aadhaar|ssn)(?:\s+(?:no\.?|number|#|card))?\s*[:#=]?\s*"
               r"((?:[A-Za-z]{1,4}[\s-]?)?\d[\d\s/.-]{2,18}\d|[A-Za-z]{1,4}\d{3,}[A-Za-z]?)", re.I), 1),
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
    # codes of three or more upper-case/digit parts with a digit: workstations, asset tags ("WS-RAD-ICU03")
    ("DEVICE", _rx(r"(?<![\w-])(?!ICD-|HLA-|COVID-|SARS-|CURB-|NYHA-|GOLD-)(?=[A-Z0-9-]*\d)[A-Z][A-Z0-9]+"
                   r"(?:-[A-Z0-9]{2,}){2,}(?![\w-])"), 0),
    # rooms, beds, wards
    ("ROOM", _rx(r"\b(?:room|rm|bed|bay|cubicle|bed\s*space|ward|unit|cell)\.?\s*(?:no\.?|number|#)?\s*"
                 r"[A-Za-z]?\d+[A-Za-z]?(?:-[A-Za-z0-9]+)?\b", re.I), 0),
)
LONG_MIN_DIGITS = {-6: 6, -9: 9}
# codes that mix letters and digits ("PJN448812H", "A7X9-22K4-Q1", "88-KL-2210"): serials, MRNs, device ids
_CODE = re.compile(r"(?<![\w/.-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?![\w/-]|\.\w)")
_NOT_CODE = re.compile(r"(?i)^(?:[CTLS]\d{1,2}-[CTLS]?\d{1,2}|\d+(?:[a-z]{1,6})|.*\bn?cov\b.*|covid-?\d+|h\dn\d|"
                       r"[a-z]{1,3}\d{1,3}[a-z]?)$")


def code_spans(text: str) -> list[Span]:
    spans = []
    for m in _CODE.finditer(text):
        tok = m.group()
        if len(tok) < 7 or sum(c.isdigit() for c in tok) < 5 or _NOT_CODE.match(tok):
            continue   # >= 5 digits: drug and trial codes ("AMY-101", "MK-4482", "BNT162b2") stay
        spans.append(Span(m.start(), m.end(), "ID"))
    return spans


def ipv6_ok(s: str) -> bool:
    groups = [g for g in s.split(":") if g]
    return ("::" in s and any(len(g) >= 3 for g in groups)) or len(groups) >= 6 and any(
        c.isalpha() for c in s) or len(groups) == 8

_FACILITY = re.compile(
    r"\b(?:Hospitals?|Medical\s+Cent(?:er|re)|Health(?:care)?\s+(?:System|Cent(?:er|re)|Trust)|Clinic|Infirmary|"
    r"Hospice|Nursing\s+Home|Care\s+Home|Medical\s+Group|Institute|University|College|School|Corporation|Corp|"
    r"Inc|Ltd|LLC|Company|Factory|Mill|Plant|Surgery|Practice)\b\.?", re.I)
_FACILITY_TAIL = re.compile(r"\s+of\s+[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)?")



def rule_spans(text: str) -> list[Span]:
    """Identifiers found by the regex rules (``RULES``), in rule order (the first rule's tag wins a tie)."""
    spans: list[Span] = []
    for tag, rx, group in RULES:
        for m in rx.finditer(text):
            if group == -2:
                if ipv6_ok(m.group(0)):
                    spans.append(Span(m.start(), m.end(), tag))
            elif group < 0:
                if sum(c.isdigit() for c in m.group(0)) < LONG_MIN_DIGITS[group]:
                    continue
                spans.append(Span(m.start(), m.end(), tag))
            elif m.group(group):
                spans.append(Span(m.start(group), m.end(group), tag))
    return spans


_CARE_HOME = re.compile(r"\b((?:[A-Z][\w'’-]+\s){1,3})(?i:care|nursing|rest|retirement|residential)\s+(?i:home)\b")
_CAME_FROM = re.compile(r"\b(?i:transferred|transfer|retrieved|flown|moved|lives|living|resident|visiting|returned|"
                        r"travelled|traveled|came|referred)\s+(?i:from|in|to|of)\s+([A-Z][a-z]{2,}(?:[\s-][A-Z][a-z]{2,})?)\b")

_DEPARTMENT = re.compile(r"(?:ology|iatrics|iatry|surgery|medicine|theatres?|ward|unit|clinic|dept|department)$")


def _place_spans(text: str) -> list[Span]:
    """"Sunrise Lodge care home", "transferred from Kalgoorlie": capitalised words placed as a home or a town."""
    common = lexicon()[2]
    spans = []
    for m in _CARE_HOME.finditer(text):
        words = [fold(w) for w in m.group(1).split()]
        if not any(w in LABELS or w in NOT_NAMES for w in words):
            spans.append(Span(m.start(1), m.end(1) - 1, "LOCATION"))
    for m in _CAME_FROM.finditer(text):
        words = [fold(w) for w in re.split(r"[\s-]", m.group(1))]
        if not any(w in common or w in LABELS or w in NOT_NAMES or w in PLACES_OK or w in MONTH_WORDS
                   or _DEPARTMENT.search(w) for w in words):
            spans.append(Span(m.start(1), m.end(1), "LOCATION"))
    return spans


def facility_spans(text: str) -> list[Span]:
    spans = _place_spans(text)
    _, _, common = lexicon()
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
            f = fold(word.rstrip("."))
            if f not in FACILITY_WORDS and (f in common or f in LABELS or f in NOT_NAMES or sentence_start(
                    text, start - len(k.group(0)))):
                if not (f not in common and f not in LABELS and f not in NOT_NAMES):
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


# Letters of scripts other than Latin and Greek (Greek letters are clinical: "β-lactam", "α1-antitrypsin"): in these
# notes a run of them is a name or an address ("张伟", "محمد الأحمد", "김민지", "Иванов").
OTHER_SCRIPT = re.compile(
    "[\u0400-\u052F\u0530-\u058F\u0590-\u05FF\u0600-\u06FF\u0700-\u08FF\u0900-\u0DFF\u0E00-\u0EFF"
    "\u0F00-\u0FFF\u1000-\u109F\u10A0-\u10FF\u1100-\u11FF\u1200-\u139F\u1780-\u17FF\u3040-\u30FF"
    "\u3100-\u318F\u3400-\u4DBF\u4E00-\u9FFF\uA960-\uA97F\uAC00-\uD7AF\uF900-\uFAFF\uFB1D-\uFDFF"
    "\uFE70-\uFEFF\U00020000-\U0002FA1F]+"
    "(?:[\\s.\u00B7\u30FB-]{1,2}[\u0400-\u052F\u0530-\u058F\u0590-\u05FF\u0600-\u06FF\u0700-\u08FF"
    "\u0900-\u0DFF\u0E00-\u0EFF\u0F00-\u0FFF\u1000-\u109F\u10A0-\u10FF\u1100-\u11FF\u1200-\u139F"
    "\u1780-\u17FF\u3040-\u30FF\u3100-\u318F\u3400-\u4DBF\u4E00-\u9FFF\uA960-\uA97F\uAC00-\uD7AF"
    "\uF900-\uFAFF\uFB1D-\uFDFF\uFE70-\uFEFF\U00020000-\U0002FA1F]+)*")

# Greek: single letters and lower-case words are clinical ("β2", "α1-antitrypsin"); a capitalised Greek word of three
# or more letters in these notes is a name ("Νίκος Δημητρίου").
GREEK_NAME = re.compile("(?<![^\\W\\d_])[\u0386\u0388-\u038F\u0391-\u03A9][\u0390\u03AC-\u03CE]{2,}"
                        "(?:\\s{1,2}[\u0386\u0388-\u038F\u0391-\u03A9][\u0390\u03AC-\u03CE]{2,})*(?![^\\W\\d_])")


AGE_90 = "90 or older"   # HIPAA Safe Harbor: ages over 89 are aggregated into one category
_AGE_RES = (
    re.compile(r"\b(\d{2,3})(\s*-?\s*)(years?[\s-]*old|yrs?[\s-]*old|year-old|y/o|y\.o\.?|yo|yrs?|years?|y)"
               r"(?![\w/])", re.I),
    re.compile(r"\b(age[ds:]?|age\s+of)(\s*[:=]?\s*)(\d{2,3})\b", re.I),
    # "91M", "93 F": an age before the sex, not a temperature ("T 101F", "temp 99 F")
    re.compile(r"(?<![\w.°])(?<!\b[Tt] )(?<!temp )(?<!Temp )(?<!TEMP )(\d{2,3})(\s?)([MF])\b"),
)


_UNITS = r"(?:one|two|three|four|five|six|seven|eight|nine)"
_OLD_WORDS = (rf"(?:ninety(?:[\s-]{_UNITS})?|(?:a|one)[\s-]hundred(?:(?:\s+and)?[\s-](?:{_UNITS}|ten|eleven|twelve|"
              rf"thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty))?)")
_AGE_WORDS = (
    re.compile(rf"\b(age[ds]?|age\s+of)(\s*[:=]?\s*)({_OLD_WORDS})\b", re.I),
    re.compile(rf"\b{_OLD_WORDS}[\s-]*(?:years?[\s-]*old|year-old|y/o|yo\b|yrs?\b)", re.I),
)


def ages(text: str) -> str:
    def old(n: str) -> bool:
        return 90 <= int(n) <= 130


    text = _AGE_RES[0].sub(lambda m: AGE_90 if old(m.group(1)) else m.group(0), text)
    text = _AGE_RES[1].sub(lambda m: f"{m.group(1)}{m.group(2) or ' '}{AGE_90}" if old(m.group(3)) else m.group(0),
                           text)
    text = _AGE_RES[2].sub(lambda m: f"{AGE_90} {m.group(3)}" if old(m.group(1)) else m.group(0), text)
    text = _AGE_WORDS[0].sub(lambda m: f"{m.group(1)}{m.group(2) or ' '}{AGE_90}", text)
    return _AGE_WORDS[1].sub(AGE_90, text)


