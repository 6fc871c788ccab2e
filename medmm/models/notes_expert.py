"""A bag-of-words notes expert: TF-IDF (word 1-2-grams; optionally character 2-5-grams inside words) + logistic
regression for one finding.

The frozen sentence encoder's mean-pooled embedding blurs the few words that decide a label (a pathogen named in
the notes, a negation), and a few hundred labelled notes are too few to fine-tune it. A TF-IDF + logistic
regression model reads exactly those words; its logit enters the fusion model as one more notes feature, so the
multimodal model starts from the bag-of-words anchor instead of competing with it. Training fits it only on the
training rows of each fold, and the fusion model sees *cross-fitted* expert logits (from an expert that never saw
that row), so it learns how far to trust the expert on unseen notes.

What the fusion model reads is the expert's *word evidence* (``features``): the logit minus the intercept. The
intercept is the prior of the notes it was fitted on (the COVID collection, mostly COVID-19: +2.0 in log-odds);
left in, any note that shares no word with that vocabulary (a knee pre-op note on an adult film) would arrive as
"+2.0 towards COVID-19". Centred, a note without known words is neutral (0), as a note that is absent is.

Optional character n-grams (``char_ngrams=(2, 5)``: scikit-learn's ``char_wb``, each part L2-normalised on its own as a ``FeatureUnion`` does)
read spellings the word tokens split or miss ("covid19", "sars-cov-2", "pneumonitis"): on the COVID
collection's notes, patient-grouped 5-fold CV over 10 fold seeds, they add 0.005 ± 0.007 AUC (paired) to the
word model, 0.868 -> 0.872 (``scripts/notes_baselines.py``), and nothing (-0.001) on the training recipe's own
folds: within the noise, so training leaves them off unless asked (``--notes-expert-chars``).

Stored in the checkpoint JSON (vocabulary, idf, coefficients): plain numbers, no pickle. ``contributions`` gives
each term's share of the logit, so the app can show which words the expert used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


def _terms(text: str) -> list[str]:
    words = _TOKEN.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


_WORD = re.compile(r"\S+")


def _char_spans(lowered: str, n_range: tuple[int, int]) -> list[tuple[int, int, str]]:
    """scikit-learn's ``char_wb`` n-grams of ``lowered`` (each whitespace-separated word padded with one space on
    each side) with the character span of ``lowered`` each covers (the padding maps onto the word's edge)."""
    lo, hi = n_range
    out = []
    for m in _WORD.finditer(lowered):
        w = f" {m.group(0)} "
        for n in range(lo, hi + 1):
            offset = 0
            while True:
                gram = w[offset:offset + n]
                start = m.start() + max(offset - 1, 0)
                end = m.start() + min(offset + n - 1, len(w) - 2)
                out.append((start, max(end, start + 1), gram))
                if offset + n >= len(w):
                    break
                offset += 1
            if offset == 0:  # a word shorter than n: counted once, as scikit-learn does
                break
    return out


@dataclass
class NotesExpert:
    finding: str
    vocabulary: dict[str, int]
    idf: np.ndarray         # [V]
    coef: np.ndarray        # [V]
    intercept: float
    centred: bool = True    # ``features`` = word evidence only (False: checkpoints from before, logit incl. intercept)
    char_ngrams: tuple[int, int] | None = None  # (2, 5): a char_wb TF-IDF part beside the words (None: words only)
    char_vocabulary: dict[str, int] | None = None
    char_idf: np.ndarray | None = None
    char_coef: np.ndarray | None = None

    # -------------------------------------------------------------------------------------------- fit / apply
    @classmethod
    def fit(cls, texts: Sequence[str], y: Sequence[float], finding: str, C: float = 10.0,
            char_ngrams: tuple[int, int] | None = None) -> "NotesExpert":
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y, dtype=float)
        if len(np.unique(y)) < 2:
            return cls(finding, {}, np.zeros(0), np.zeros(0), float(np.log((y.mean() + 1e-3) / (1 - y.mean() + 1e-3))))
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        parts = [vec.fit_transform(list(texts))]
        chars = None
        if char_ngrams is not None:
            chars = TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(char_ngrams), min_df=2, sublinear_tf=True)
            parts.append(chars.fit_transform(list(texts)))
        clf = LogisticRegression(C=C, max_iter=3000).fit(hstack(parts).tocsr(), y)
        coef, n_words = clf.coef_[0].astype(np.float64), parts[0].shape[1]
        out = cls(finding, {t: int(i) for t, i in vec.vocabulary_.items()}, vec.idf_.astype(np.float64),
                  coef[:n_words], float(clf.intercept_[0]))
        if chars is not None:
            out.char_ngrams = (int(char_ngrams[0]), int(char_ngrams[1]))
            out.char_vocabulary = {t: int(i) for t, i in chars.vocabulary_.items()}
            out.char_idf, out.char_coef = chars.idf_.astype(np.float64), coef[n_words:]
        return out

    @staticmethod
    def _tfidf(terms: Sequence[str], vocabulary: dict[str, int], idf: np.ndarray) -> dict[int, float]:
        """Sublinear tf x idf of the known ``terms``, L2-normalised (scikit-learn's ``TfidfVectorizer``)."""
        counts: dict[int, int] = {}
        for t in terms:
            j = vocabulary.get(t)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        vals = {j: (1 + math.log(c)) * idf[j] for j, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vals.values())) or 1.0
        return {j: v / norm for j, v in vals.items()}

    def _vector(self, text: str) -> dict[int, float]:
        return self._tfidf(_terms(text or ""), self.vocabulary, self.idf)

    def _char_vector(self, text: str) -> dict[int, float]:
        if not self.char_vocabulary:
            return {}
        grams = [g for _, _, g in _char_spans((text or "").lower(), self.char_ngrams)]
        return self._tfidf(grams, self.char_vocabulary, self.char_idf)

    def logit(self, text: str | None) -> float:
        if not text:
            return 0.0
        return (self.intercept + sum(self.coef[j] * v for j, v in self._vector(text).items())
                + sum(self.char_coef[j] * v for j, v in self._char_vector(text).items()))

    def logits(self, texts: Sequence[str | None]) -> np.ndarray:
        return np.array([self.logit(t) for t in texts], dtype=np.float32)

    def feature(self, text: str | None) -> float:
        """What the fusion model reads: the word evidence (logit without the intercept; 0 without notes)."""
        if not text:
            return 0.0
        return self.logit(text) - (self.intercept if self.centred else 0.0)

    def features(self, texts: Sequence[str | None]) -> np.ndarray:
        return np.array([self.feature(t) for t in texts], dtype=np.float32)

    def span_contributions(self, text: str | None) -> list[tuple[int, int, float]]:
        """``(start, end, value)`` per term occurrence in ``text`` (a bigram spans both words, a character n-gram the
        part of its word it covers): each term's ``coefficient x tf-idf`` shared equally among its occurrences, so
        the values sum to ``feature(text)``. The evidence is linear in these shares (what the learned pathway's
        word attribution used; since issue 24 predictions read the notes as evidence, ``medmm.notes``, not through
        this expert)."""
        if not text or not self.vocabulary:
            return []
        # lower-case without changing the length, so the spans index ``text`` itself
        lowered = "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text)
        words = [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(lowered)]
        spans = [(a, b, w) for a, b, w in words] + [(a[0], b[1], f"{a[2]} {b[2]}") for a, b in zip(words, words[1:])]
        out = self._shares([(a, b, self.vocabulary.get(t)) for a, b, t in spans], self._vector(text), self.coef)
        if self.char_vocabulary:
            grams = [(a, b, self.char_vocabulary.get(g)) for a, b, g in _char_spans(lowered, self.char_ngrams)]
            out += self._shares(grams, self._char_vector(text), self.char_coef)
        return out

    @staticmethod
    def _shares(hits: list[tuple[int, int, int | None]], vector: dict[int, float],
                coef: np.ndarray) -> list[tuple[int, int, float]]:
        hits = [h for h in hits if h[2] is not None]
        count: dict[int, int] = {}
        for _, _, j in hits:
            count[j] = count.get(j, 0) + 1
        return [(a, b, float(coef[j] * vector.get(j, 0.0)) / count[j]) for a, b, j in hits]

    def contributions(self, text: str | None, top: int = 8) -> list[tuple[str, float]]:
        """The terms with the largest |coefficient x tf-idf| in ``text`` (what the expert read), largest first;
        character n-grams are shown quoted (\"' covi'\")."""
        if not text or not self.vocabulary:
            return []
        inverse = {j: t for t, j in self.vocabulary.items()}
        parts = [(inverse[j], float(self.coef[j] * v)) for j, v in self._vector(text).items()]
        if self.char_vocabulary:
            chars = {j: g for g, j in self.char_vocabulary.items()}
            parts += [(f"'{chars[j]}'", float(self.char_coef[j] * v)) for j, v in self._char_vector(text).items()]
        return sorted(parts, key=lambda p: -abs(p[1]))[:top]

    # -------------------------------------------------------------------------------------------- storage
    def to_dict(self) -> dict[str, Any]:
        order = sorted(self.vocabulary, key=self.vocabulary.get)
        return {"finding": self.finding, "terms": order, "idf": [round(float(self.idf[self.vocabulary[t]]), 6) for t in order],
                "coef": [round(float(self.coef[self.vocabulary[t]]), 6) for t in order], "intercept": self.intercept,
                "centred": self.centred, **self._char_dict()}

    def _char_dict(self) -> dict[str, Any]:
        if not self.char_vocabulary:
            return {}
        order = sorted(self.char_vocabulary, key=self.char_vocabulary.get)
        return {"char_ngrams": list(self.char_ngrams), "char_terms": order,
                "char_idf": [round(float(self.char_idf[self.char_vocabulary[t]]), 6) for t in order],
                "char_coef": [round(float(self.char_coef[self.char_vocabulary[t]]), 6) for t in order]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NotesExpert":
        terms = list(d["terms"])
        out = cls(d["finding"], {t: i for i, t in enumerate(terms)}, np.asarray(d["idf"], np.float64),
                  np.asarray(d["coef"], np.float64), float(d["intercept"]), bool(d.get("centred", False)))
        if d.get("char_terms"):  # checkpoints before the character n-grams have none
            out.char_ngrams = (int(d["char_ngrams"][0]), int(d["char_ngrams"][1]))
            out.char_vocabulary = {t: i for i, t in enumerate(d["char_terms"])}
            out.char_idf, out.char_coef = np.asarray(d["char_idf"], np.float64), np.asarray(d["char_coef"], np.float64)
        return out


def cross_fitted_features(texts: Sequence[str | None], y: np.ndarray, groups: np.ndarray, finding: str,
                          k: int = 5, seed: int = 0, char_ngrams: tuple[int, int] | None = None) -> np.ndarray:
    """Expert features (``NotesExpert.features``) for every row with notes, each from an expert fitted without
    that row's patient."""
    from sklearn.model_selection import GroupKFold

    out = np.zeros(len(texts), np.float32)
    rows = np.array([t is not None and not np.isnan(v) for t, v in zip(texts, y)])
    idx = np.where(rows)[0]
    if len(idx) < 2 * k:
        return out
    splitter = GroupKFold(n_splits=k)
    for tr, va in splitter.split(idx, groups=groups[idx]):
        ex = NotesExpert.fit([texts[i] for i in idx[tr]], y[idx[tr]], finding, char_ngrams=char_ngrams)
        out[idx[va]] = ex.features([texts[i] for i in idx[va]])
    # rows with notes but no label for the finding: an expert fitted on every labelled row
    other = np.array([t is not None for t in texts]) & ~rows
    if other.any():
        ex = NotesExpert.fit([texts[i] for i in idx], y[idx], finding, char_ngrams=char_ngrams)
        out[other] = ex.features([texts[i] for i in np.where(other)[0]])
    return out
