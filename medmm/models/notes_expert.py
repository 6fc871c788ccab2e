"""A bag-of-words notes expert: TF-IDF (word 1-2-grams) + logistic regression for one finding.

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


@dataclass
class NotesExpert:
    finding: str
    vocabulary: dict[str, int]
    idf: np.ndarray         # [V]
    coef: np.ndarray        # [V]
    intercept: float
    centred: bool = True    # ``features`` = word evidence only (False: checkpoints from before, logit incl. intercept)

    # -------------------------------------------------------------------------------------------- fit / apply
    @classmethod
    def fit(cls, texts: Sequence[str], y: Sequence[float], finding: str, C: float = 10.0) -> "NotesExpert":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        x = vec.fit_transform(list(texts))
        y = np.asarray(y, dtype=float)
        if len(np.unique(y)) < 2:
            return cls(finding, {}, np.zeros(0), np.zeros(0), float(np.log((y.mean() + 1e-3) / (1 - y.mean() + 1e-3))))
        clf = LogisticRegression(C=C, max_iter=3000).fit(x, y)
        return cls(finding, {t: int(i) for t, i in vec.vocabulary_.items()}, vec.idf_.astype(np.float64),
                   clf.coef_[0].astype(np.float64), float(clf.intercept_[0]))

    def _vector(self, text: str) -> dict[int, float]:
        counts: dict[int, int] = {}
        for t in _terms(text or ""):
            j = self.vocabulary.get(t)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        vals = {j: (1 + math.log(c)) * self.idf[j] for j, c in counts.items()}  # sublinear tf x idf
        norm = math.sqrt(sum(v * v for v in vals.values())) or 1.0
        return {j: v / norm for j, v in vals.items()}

    def logit(self, text: str | None) -> float:
        if not text:
            return 0.0
        return self.intercept + sum(self.coef[j] * v for j, v in self._vector(text).items())

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
        """``(start, end, value)`` per term occurrence in ``text`` (a bigram spans both words): each term's
        ``coefficient x tf-idf`` shared equally among its occurrences, so the values sum to ``feature(text)``. The
        word evidence is linear in these shares, which is what lets an attribution split the expert's effect onto
        the words exactly (``explain.attribution.token_attribution``)."""
        if not text or not self.vocabulary:
            return []
        # lower-case without changing the length, so the spans index ``text`` itself
        lowered = "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text)
        words = [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(lowered)]
        spans = [(a, b, w) for a, b, w in words] + [(a[0], b[1], f"{a[2]} {b[2]}") for a, b in zip(words, words[1:])]
        hits = [(a, b, self.vocabulary[t]) for a, b, t in spans if t in self.vocabulary]
        vector = self._vector(text)
        count: dict[int, int] = {}
        for _, _, j in hits:
            count[j] = count.get(j, 0) + 1
        return [(a, b, float(self.coef[j] * vector.get(j, 0.0)) / count[j]) for a, b, j in hits]

    def contributions(self, text: str | None, top: int = 8) -> list[tuple[str, float]]:
        """The terms with the largest |coefficient x tf-idf| in ``text`` (what the expert read), largest first."""
        if not text or not self.vocabulary:
            return []
        inverse = {j: t for t, j in self.vocabulary.items()}
        parts = [(inverse[j], float(self.coef[j] * v)) for j, v in self._vector(text).items()]
        return sorted(parts, key=lambda p: -abs(p[1]))[:top]

    # -------------------------------------------------------------------------------------------- storage
    def to_dict(self) -> dict[str, Any]:
        order = sorted(self.vocabulary, key=self.vocabulary.get)
        return {"finding": self.finding, "terms": order, "idf": [round(float(self.idf[self.vocabulary[t]]), 6) for t in order],
                "coef": [round(float(self.coef[self.vocabulary[t]]), 6) for t in order], "intercept": self.intercept,
                "centred": self.centred}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NotesExpert":
        terms = list(d["terms"])
        return cls(d["finding"], {t: i for i, t in enumerate(terms)}, np.asarray(d["idf"], np.float64),
                   np.asarray(d["coef"], np.float64), float(d["intercept"]), bool(d.get("centred", False)))


def cross_fitted_features(texts: Sequence[str | None], y: np.ndarray, groups: np.ndarray, finding: str,
                          k: int = 5, seed: int = 0) -> np.ndarray:
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
        ex = NotesExpert.fit([texts[i] for i in idx[tr]], y[idx[tr]], finding)
        out[idx[va]] = ex.features([texts[i] for i in idx[va]])
    # rows with notes but no label for the finding: an expert fitted on every labelled row
    other = np.array([t is not None for t in texts]) & ~rows
    if other.any():
        ex = NotesExpert.fit([texts[i] for i in idx], y[idx], finding)
        out[other] = ex.features([texts[i] for i in np.where(other)[0]])
    return out
