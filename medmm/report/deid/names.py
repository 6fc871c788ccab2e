"""Names in free text: which words of a note are a person's name.

``name_spans(text)`` reads the note's words once (``_Words``) and marks names in steps, each a method:

1. seeds: capitalised words in the name lexicon;
2. after a title ("Dr. A. Patel", "dr jones");
3. after a label or a relative ("Patient John Doe", "pt: Doe, John", "daughter Grace", "referred by ...");
4. grown to adjacent capitalised words ("Maria Garcia Lopez", "JOHN DOE", "Smith, John");
5. particles between name words ("van der Berg"), "Hope's father", "ahmed al-rashid", and a word that is a name
   somewhere in the note is a name wherever it is capitalised;
6. dotted initials ("J.S."), labelled initials, and capitalised words before an age ("Quincy, 67").

DICOM person names (``DOE^JOHN``) are ``CARET_NAME``. It over-redacts capitalised surnames that are also words
rather than miss names; eponyms ("Parkinson disease", "Bell's palsy") and organisms are kept.
"""

from __future__ import annotations

import re

from medmm.report.deid.lexicon import (EPONYM_NEXT, LABELS, MONTH_WORDS, NOT_INITIALS, NOT_NAMES, PARTICLES,
                                       PERSON_NOUNS, PLACES_OK, RELATIVES, TITLE_CASE_SENSITIVE, TITLES, WORD,
                                       WORD_NAMES, WORD_NAMES_LOWER, fold, is_cap, is_upper, lexicon, sentence_start)
from medmm.report.deid.spans import Span

CARET_NAME = re.compile(r"(?<![\w^])[^\W\d_][\w'’-]*\^[\w'’^ -]*?(?=[\s,;:.)]|$)")
_LABEL_PHRASES = re.compile(
    r"\b(?:referred|seen|reviewed|signed|dictated|discussed|examined|reported|verified|authored|transcribed|"
    r"accompanied)\s+(?:by|with)\b|\b(?:spoke|spoken|discussed)\s+(?:to|with)\b|\bcare\s+of\b|\bc/o\s+(?=[A-Z][a-z])"
    r"|(?:^|(?<=[\s(]))re\s*:?\s+(?=(?-i:[A-Z]))",
    re.I)
_STRONG_LABEL = re.compile(r"\b(?:(?:patient'?s?|pt\.?)\s+)?name\s*[:=]\s*$", re.I)
_DATE_WORD_BEFORE = re.compile(r"(?:\d|\b(?:in|on|since|from|until|till|by|of|last|next|early|late|mid|end|"
                               r"before|after|during|this)\s*)[\s,./-]*$", re.I)
_NEXT_CAPITAL = re.compile(r"[\s-]+[A-Z][\w'’]+")
_AFTER_LABEL = re.compile(r"[\s:=,]*(?:\(\s*)?")
_POSSESSIVE_REL = re.compile(r"([^\W\d_]+)['’]s\s+(?:" + "|".join(sorted(RELATIVES, key=len, reverse=True)) +
                             r"|baby|child|kids?|children|care|carer)\b", re.I)
_PARTICLE_NAME = re.compile(r"(?i:al|el|ul|bin|ibn|abu|abd|abdel|abdul|bint|ben|ould)-[^\W\d_]{3,}"
                            r"|(?i:o|d)['’](?!clock)[^\W\d_]{3,}(?:-[^\W\d_]+)*")
_INITIALS = re.compile(r"(?<![\w.])(?:[A-Z]\.\s?){1,3}[A-Z]\.(?![\w])")
_INITIALS_LABEL = re.compile(r"\b(?i:initials)\s*[:=]?\s*([A-Z]{2,4}|(?:[A-Z]\.?\s?){1,3}[A-Z]\.?)(?![\w])")
_NAME_BEFORE_AGE = re.compile(
    r"(?:^|(?<=[.!?;:\n])\s*)((?:[A-Z][\w'’-]+\s){0,2}[A-Z][\w'’-]+),?\s+(?:(?:is|was)\s+an?\s+)?\d{1,3}"
    r"(?=\s*(?:-\s*)?(?:y|yo|yrs?|years?|year-old|[MF])\b|\s*,)")

_LOWER_NAME_BEFORE_AGE = re.compile(
    r"(?:^|[.!?;:\n]\s*|\s-\s+|\b(?i:pt|patient|name|re|for)(?:\s+is)?\s*:?\s+)((?:[a-z][a-zà-ÿ'’-]+ ){1,5}"
    r"[a-z][a-zà-ÿ'’-]+)(?:,?\s+\d{1,3}(?=\s*(?:-\s*)?(?:y|yo|yrs?|years?|year-old|[MFmf])\b|\s*,)|\s+(?=dob\b))")
_AGE_SEX_NEXT = re.compile(r"\s*\d{1,3}\s?[MFmf]\b|\s+dob\b")
# a capitalised word right after an age ("3yo Keoni wheezy", "72M Haruto"), a header "SURNAME, FIRST" at a line's
# start ("OKONKWO, CHIDINMA  MRN ..."), a name or initials before a bracketed title ("AB (Mrs)")
_NAME_AFTER_AGE = re.compile(r"\b\d{1,3}\s?(?:yo|y/o|y\.o\.?|yrs?|years?[\s-]*old|year-old|[MF])\s+"
                             r"([A-Z][a-z][\w'’-]+)")
_CAPS_HEADER = re.compile(r"(?:^|(?<=\n))[ \t*#>=-]*([A-Z][A-Z'’-]+(?: [A-Z][A-Z'’-]+)?,[ \t]*[A-Z][A-Z'’-]+"
                          r"(?: [A-Z][A-Z'’-]+)?(?: [A-Z]\.?)?)(?=[\s:;*-]|$)")
_IN_BRACKETS = re.compile(r"\(([A-Z][a-z][\w'’-]+(?: [A-Z][a-z][\w'’-]+){1,2})\)")
_COMMA_NAME_BEFORE_AGE = re.compile(r"\b([A-Z][a-z][\w'’-]+,\s?[A-Z][a-z][\w'’-]+),?\s+\d{1,3}\s?(?:[MF]|y|yo|yrs?)\b")
_BEFORE_TITLE = re.compile(r"\b([A-Z][\w'’-]+|[A-Z]{2,3})\s*\((?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?\)")
# dotted initials with a lower-case particle ("R.d.S.") or in lower case ("s.m.p"); dosing abbreviations stay
_INITIALS_MIXED = re.compile(r"(?<![\w.])[A-Z]\.(?:\s?[a-z]{1,3}\.)+\s?[A-Z]\.?(?![\w])"
                             r"|(?<![\w.])[A-Z]\.\s?Ma?c[A-Z][\w'’-]*"
                             r"|(?<![\w.])[a-z]\.[a-z]\.[a-z]\.?(?![\w.])")
_DOSING = frozenset("tds qds bds bid tid qid prn nbm npo sos ods odm qhs qam qpm ac pc hs stat mdi dpi inh neb eod "
                    "aaa ama dna dnr dob doa ecg eeg ent gcs".split())


def _title_before(text: str, pos: int) -> bool:
    return re.search(r"\b(?:dr|mr|mrs|ms|prof|doctor)\.?\s+$", text[max(0, pos - 12):pos], re.I) is not None


class _Words:
    """The words of one note, what the lexicon says of each, and which are marked as a name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.first, self.last, self.common = lexicon()
        self.words = [(m.start(), m.end(), m.group()) for m in WORD.finditer(text)]
        self.n = len(self.words)
        self.is_name = [False] * self.n
        self.starts = {s: k for k, (s, _, _) in enumerate(self.words)}
        self.ends_at = {e: k for k, (_, e, _) in enumerate(self.words)}

    def word(self, i: int) -> str:
        return self.words[i][2]

    def folded(self, i: int) -> str:
        return fold(self.words[i][2].rstrip("."))

    def parts(self, i: int) -> list[str]:
        return [p for p in re.split(r"[-.]", self.folded(i)) if p]

    def gap(self, i: int, j: int) -> str:
        return self.text[self.words[i][1]:self.words[j][0]]

    def blocked(self, i: int) -> bool:
        """Never a name here: one letter, a contraction, a report word, a month, a title, a label, "SpO2", an eponym."""
        f, w, end = self.folded(i), self.words[i][2], self.words[i][1]
        if len(w) == 1 or (re.search(r"['’](?:s|re|ll|ve|d|t)$", w, re.I)
                           and fold(re.sub(r"['’]\w+$", "", w)) in self.common):
            return True   # "I", "There's"
        if f in NOT_NAMES or f in MONTH_WORDS or f in TITLES or f in LABELS or f in PLACES_OK:
            return True
        if self.text[end:end + 1].isdigit():
            return True   # "PaCO2", "SpO2"
        if EPONYM_NEXT.match(self.text, end) is not None:
            return True
        two = _NEXT_CAPITAL.match(self.text, end)   # "Ivor Lewis oesophagectomy", "Guillain Barre syndrome"
        return two is not None and EPONYM_NEXT.match(self.text, two.end()) is not None

    def in_lex(self, i: int, *sets: frozenset[str]) -> bool:
        f, ps = self.folded(i), self.parts(i)
        if any(f in s for s in sets):
            return True
        if len(ps) < 2 or any(len(p) == 1 or p in self.common for p in ps):  # "X-ray", "Real-time"
            return False
        return any(p in s and len(p) > 2 for s in sets for p in ps)

    def named(self, i: int) -> bool:
        return self.in_lex(i, self.first, self.last)

    def candidate(self, i: int, *, lower_ok: bool) -> bool:
        """Could word i be part of a name next to a known one (or after a label)?"""
        w = self.words[i][2]
        if self.blocked(i):
            return False
        if is_cap(w) or (is_upper(w) and (len(w) >= 3 or self.named(i))):
            return self.folded(i) not in self.common or self.named(i)
        return lower_ok and w.islower() and self.named(i) and self.folded(i) not in self.common

    def lower_hyphen(self, j: int) -> bool:
        """"jean-luc", "al-rashid" after a label: every part a name."""
        ps = self.parts(j)
        return self.word(j).islower() and len(ps) >= 2 and all(
            p in self.first or p in self.last or p in WORD_NAMES or p in PARTICLES for p in ps) and not self.blocked(j)

    # ---------------------------------------------------------------------------------------------- the steps
    def seeds(self) -> None:
        """Lexicon words, capitalised (Title case, or upper case with >= 4 letters)."""
        for i in range(self.n):
            w = self.word(i)
            if self.blocked(i):
                continue
            if (is_cap(w) and self.named(i)) or (is_upper(w) and len(w) >= 4 and self.in_lex(i, self.first)):
                self.is_name[i] = True

    def after_titles(self) -> None:
        """"Dr. A. Patel", "dr jones", "Mr O'Brien"; "Dr. Patel. Fever": the full stop after a surname ends it."""
        for i in range(self.n):
            w = self.word(i)
            f = w.lower().rstrip(".")
            if not (f in TITLES and w not in TITLE_CASE_SENSITIVE and (w[:1].isupper() or f in ("dr", "doctor", "mr",
                                                                                                  "mrs"))):
                continue
            if f in ("doctor",) and not (i + 1 < self.n and is_cap(self.word(i + 1))):
                continue
            j, taken = i + 1, 0
            while j < self.n and taken < 3 and re.fullmatch(r"\.?\s+|\.\s*", self.gap(j - 1, j) or " "):
                prev = self.word(j - 1).rstrip(".")
                if j > i + 1 and len(prev) > 1 and "." in self.gap(j - 1, j) and not (
                        re.fullmatch(r"(?:[A-Z]\.)+[A-Z]", prev)):
                    break
                wj = self.word(j)
                if len(wj.rstrip(".")) == 1 and wj[:1].isupper():          # an initial
                    self.is_name[j] = True
                elif is_cap(wj) or is_upper(wj) or (taken == 0 and wj.islower() and not self.blocked(j)
                                                      and self.folded(j) not in self.common):
                    if self.blocked(j):
                        break
                    self.is_name[j] = True
                    taken += 1
                else:
                    break
                j += 1

    def after_labels(self) -> None:
        """"Patient John Doe", "pt: Doe, John", "Husband Robert", "nurse Katarzyna", "referred by ..."."""
        text = self.text
        label_ends = [m.end() for m in _LABEL_PHRASES.finditer(text)]
        label_ends += [self.words[i][1] for i in range(self.n) if self.folded(i) in RELATIVES]
        label_ends += [self.words[i][1] for i in range(self.n)
                       if self.folded(i) in LABELS and not EPONYM_NEXT.match(text, self.words[i][1])]
        for end in label_ends:
            m = _AFTER_LABEL.match(text, end)
            j = self.starts.get(m.end()) if m else None
            if j is None:
                continue
            strong = _STRONG_LABEL.search(text, max(0, m.end() - 40), m.end()) is not None  # not from 0: linear
            before = self.ends_at.get(end)
            relative = self.folded(before) in RELATIVES if before is not None else False
            self._names_after_label(j, lower_ok=text[end - 3:end].lower() != "per", strong=strong, relative=relative)

    def _names_after_label(self, j: int, *, lower_ok: bool, strong: bool, relative: bool) -> None:
        taken = 0
        while j < self.n and taken < 3:
            if taken and not re.fullmatch(r"\s+|,\s*|\s*-\s*", self.gap(j - 1, j)):
                break
            wj, fj, blocked = self.word(j), self.folded(j), self.blocked(j)
            if taken and self.gap(j - 1, j).startswith(",") and not self.in_lex(j, self.first) and not (
                    is_upper(self.word(j - 1)) and is_upper(wj) and not blocked and fj not in self.common):
                break  # "Doe, John" continues only with a first name (or "OKONKWO, CHIDINMA" from a header)
            if fj in PARTICLES and wj.islower() and self._particle_run(j):
                j += 1      # "pt van der hoeven": the particles, then the name
                continue
            worded = fj in WORD_NAMES and (is_cap(wj) or is_upper(wj)) and not blocked
            lower_named = relative and wj.islower() and not blocked and (
                fj in WORD_NAMES_LOWER or (fj not in self.common and self.named(j)))
            related = relative and taken == 0 and (is_cap(wj) or is_upper(wj)) and (
                not blocked or (fj in MONTH_WORDS and len(wj) > 3))   # "wife June", "daughter April"
            if self.candidate(j, lower_ok=lower_ok) or worded or lower_named or related or (
                    strong and not blocked and fj not in self.common) or self.lower_hyphen(j):
                self.is_name[j] = True
                taken += 1
                j += 1
            else:
                break

    def _particle_run(self, j: int) -> bool:
        """Lower-case particles after a label, then a word that can be a name: mark them all ("van der hoeven")."""
        k = j
        while k < self.n and self.folded(k) in PARTICLES and re.fullmatch(r" {1,2}", self.gap(k, k + 1) if k + 1 <
                                                                             self.n else ""):
            k += 1
        if k == j or k >= self.n or self.blocked(k) or len(self.word(k)) < 3 or (
                self.folded(k) in self.common and not self.named(k)):
            return False
        for m in range(j, k + 1):
            self.is_name[m] = True
        return True

    def grow(self) -> None:
        """From every name word to adjacent capitalised words ("Maria Garcia Lopez", "JOHN DOE", "Smith, John")."""
        changed = True
        while changed:
            changed = False
            for i in range(self.n):
                if not self.is_name[i]:
                    continue
                for j in (i - 1, i + 1):
                    if 0 <= j < self.n and not self.is_name[j] and self._joins(i, j):
                        self.is_name[j] = True
                        changed = True

    def _joins(self, i: int, j: int) -> bool:
        """Is word j, next to name word i, part of the same name?"""
        a, b = min(i, j), max(i, j)
        g, w = self.gap(a, b), self.word(j)
        if self.folded(j) in MONTH_WORDS and j == i - 1 and is_cap(w) and len(w) > 3 and g == " " and (
                (self.named(i) or self.folded(i) not in self.common) and not _DATE_WORD_BEFORE.search(self.text, max(0, self.words[j][0] - 12),
                                                                self.words[j][0])):
            return True     # "June Baker", not "since June" or "12 June"
        if j == i - 1 and re.fullmatch(r"[A-Z]", w) and re.fullmatch(r"\. ?", g):
            return True     # "M. Haddad"
        if j == i + 1 and w.islower() and self.word(i).islower() and re.fullmatch(r", ?", g) and (
                self.in_lex(j, self.first) and self.folded(j) not in self.common and not self.blocked(j)):
            return True     # "d'souza, kevin"
        if self.blocked(j) or not (is_cap(w) or is_upper(w)):
            return False
        comma_first = re.fullmatch(r",\s*", g) is not None and (
            self.in_lex(b, self.first) or self.folded(b) in WORD_NAMES) and not is_upper(self.word(b)) == (
            not is_upper(self.word(a)))
        if not (re.fullmatch(r" {1,2}", g) or comma_first):
            return False
        if is_upper(self.word(i)) != is_upper(w) and not self.named(j):
            return False  # "JOHN DOE" / "John Doe", not "Emily COPD"
        after_first = j == i + 1 and self.in_lex(i, self.first)        # "John Doe", "Michael Brown"
        return (self.named(j) or self.folded(j) in WORD_NAMES or after_first or comma_first
                or (self.folded(j) not in self.common and (not sentence_start(self.text, self.words[j][0]) or (
                    j == i - 1 and self.in_lex(i, self.last)))))   # "Efua Mensah" at the start of a note

    def particles(self) -> None:
        """Name particles between name words ("Dr. van der Berg", "Maria de la Cruz")."""
        for i in range(1, self.n - 1):
            if not self.is_name[i] and self.folded(i) in PARTICLES and (
                    self.is_name[i - 1] or _title_before(self.text, self.words[i][0])) and (
                    self.is_name[i + 1] or self.folded(i + 1) in PARTICLES or is_cap(self.word(i + 1))):
                self.is_name[i] = True
                if is_cap(self.word(i + 1)) and not self.blocked(i + 1):
                    self.is_name[i + 1] = True

    def possessive_relatives(self) -> None:
        """"Hope's father": a capitalised word whose possessive names a relative."""
        for i, (_, e, w) in enumerate(self.words):
            m = _POSSESSIVE_REL.match(w + self.text[e:e + 20])
            if m and (is_cap(w) or is_upper(w)) and fold(m.group(1)) not in NOT_NAMES and not EPONYM_NEXT.match(
                    self.text, e) and not sentence_start(self.text, self.words[i][0]) or (
                    m and fold(m.group(1)) in WORD_NAMES):
                self.is_name[i] = True

    def particle_names(self) -> None:
        """Lower-case names with an Arabic or similar particle: "ahmed al-rashid", "omar abu-bakr"."""
        for i in range(self.n):
            if _PARTICLE_NAME.fullmatch(self.word(i)):
                self.is_name[i] = True
                if i > 0 and re.fullmatch(r" {1,2}", self.gap(i - 1, i)) and not self.blocked(i - 1) and (
                        self.named(i - 1) or self.folded(i - 1) not in self.common):
                    self.is_name[i - 1] = True

    def repeated(self) -> None:
        """A word that is a name somewhere in the note is a name everywhere it is capitalised ("Hope ... Hope has")."""
        named = {re.sub(r"s$", "", self.folded(i)) if self.word(i).endswith(("'s", "’s")) else self.folded(i)
                 for i in range(self.n) if self.is_name[i] and len(self.word(i).rstrip(".")) > 1}
        for i in range(self.n):
            w, f = self.word(i), self.folded(i)
            if not self.is_name[i] and (is_cap(w) or is_upper(w)) and (
                    f in named or (w.endswith(("'s", "’s")) and fold(w[:-2]) in named)) and not (
                    f in NOT_NAMES or f in LABELS or f in MONTH_WORDS or f in TITLES):
                self.is_name[i] = True

    def spans(self) -> list[Span]:
        return [Span(self.words[i][0], self.words[i][1], "NAME") for i in range(self.n) if self.is_name[i]]


def _initials(text: str) -> list[Span]:
    """"J.S.", "P.R.K.", "Initials: MJB"."""
    spans = [Span(m.start(), m.end(), "NAME") for m in _INITIALS.finditer(text)
             if m.group().replace(".", "").replace(" ", "").lower() not in NOT_INITIALS]
    return spans + [Span(m.start(1), m.end(1), "NAME") for m in _INITIALS_LABEL.finditer(text)]


def _before_age(text: str) -> list[Span]:
    """"Quincy, 67", "Ji-woo Park, 8 years", "John Doe is a 67 year old": capitalised words before an age."""
    common = lexicon()[2]
    spans = []
    for m in _NAME_BEFORE_AGE.finditer(text):
        start = m.start(1)
        for w in re.finditer(r"[\w'’-]+", m.group(1)):           # leading descriptors stay: "Child [NAME], 4 years"
            if fold(w.group()) not in PERSON_NOUNS:
                break
            start = m.start(1) + w.end()
        start += len(text[start:m.end(1)]) - len(text[start:m.end(1)].lstrip())
        names = WORD.findall(text[start:m.end(1)])
        if names and any(fold(w) not in common or fold(w) in WORD_NAMES for w in names) and not any(
                fold(w) in NOT_NAMES or fold(w) in LABELS or fold(w) in MONTH_WORDS for w in names):
            spans.append(Span(start, m.end(1), "NAME"))
    return spans


def _in_context(text: str) -> list[Span]:
    """Names placed by their context: after an age, in an upper-case header, before "(Mrs)"; mixed initials."""
    common = lexicon()[2]
    spans = []
    for m in _NAME_AFTER_AGE.finditer(text):
        f = fold(m.group(1))
        after = WORD.match(text[m.end(1):m.end(1) + 40].lstrip())
        describes = after is not None and fold(after.group()) in PERSON_NOUNS    # "3yo Asian boy"
        if f not in common and not (f in NOT_NAMES or f in LABELS or f in MONTH_WORDS or f in PLACES_OK) and not (
                EPONYM_NEXT.match(text, m.end(1)) or describes):
            spans.append(Span(m.start(1), m.end(1), "NAME"))
    for m in _CAPS_HEADER.finditer(text):
        words = [fold(w) for w in WORD.findall(m.group(1))]
        if not any(w in NOT_NAMES or w in LABELS or w in PLACES_OK for w in words) and any(
                w not in common for w in words):
            spans.append(Span(m.start(1), m.end(1), "NAME"))
    for rx in (_IN_BRACKETS, _COMMA_NAME_BEFORE_AGE):     # "(Luo Wanqing)", "Tupou, Lesieli 42F"
        for m in rx.finditer(text):
            words = [fold(w) for w in WORD.findall(m.group(1))]
            if all(w not in common and w not in NOT_NAMES and w not in LABELS and w not in PLACES_OK for w in words):
                spans.append(Span(m.start(1), m.end(1), "NAME"))
    for m in _BEFORE_TITLE.finditer(text):
        f = fold(m.group(1))
        if not (f in NOT_NAMES or f in LABELS or f in common and not m.group(1).isupper()):
            spans.append(Span(m.start(1), m.end(1), "NAME"))
    for m in _INITIALS_MIXED.finditer(text):
        if m.group().replace(".", "").replace(" ", "").lower() not in NOT_INITIALS | _DOSING:
            spans.append(Span(m.start(), m.end(), "NAME"))
    return spans


def _lower_before_age(text: str) -> list[Span]:
    """"maria de los santos da silva, 39F": lower-case words that are all names (and particles) before an age."""
    first, last, common = lexicon()
    spans = []
    for m in _LOWER_NAME_BEFORE_AGE.finditer(text):
        words = m.group(1).split()
        names = [w for w in words if fold(w) not in PARTICLES]
        if len(names) < 2 or len(names) > 4 or any(fold(w) in NOT_NAMES or fold(w) in LABELS or fold(w) in RELATIVES
                                                   for w in names):
            continue
        given = fold(names[0]) in first and fold(names[0]) not in common      # "maria de los santos da silva, 39F"
        # names in no list ("aroha ngata 34f"): every word unlike an English word, right before an age with a sex
        unlisted = _AGE_SEX_NEXT.match(text, m.end(1)) is not None and all(
            fold(w) not in common and len(w) >= 3 and re.search(r"[aeiouy]", w) for w in names)
        if given or unlisted:
            spans.append(Span(m.start(1), m.end(1), "NAME"))
    return spans


def name_spans(text: str) -> list[Span]:
    """The names in ``text`` (unmerged spans tagged NAME)."""
    words = _Words(text)
    for step in (words.seeds, words.after_titles, words.after_labels, words.grow, words.particles,
                 words.possessive_relatives, words.particle_names, words.repeated):
        step()
    return words.spans() + _initials(text) + _before_age(text) + _lower_before_age(text) + _in_context(text)
