"""Sentence bank: real IU report sentences a draft may reuse (cleaned, label-checked, counted, embedded).

``build_bank`` (``scripts/build_sentence_bank.py``) makes it; ``load_bank`` reads the shipped
``assets/sentence_bank.npz`` (or ``$MEDMM_SENTENCE_BANK``) once per file. No pickles.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from medmm.report.labeler import CONCEPT_BY_NAME, Mention, find_mentions, split_sentences, strongest_statuses

logger = logging.getLogger(__name__)

DEFAULT_BANK_PATH = Path(__file__).resolve().parents[2] / "assets" / "sentence_bank.npz"
BANK_ENV_VAR = "MEDMM_SENTENCE_BANK"


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
        return {f: status for f, (status, _) in strongest_statuses(self.mentions[i]).items()}

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


__all__ = ["BANK_ENV_VAR", "DEFAULT_BANK_PATH", "SentenceBank", "build_bank", "clean_bank_sentence", "load_bank"]
