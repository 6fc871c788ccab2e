"""Note words scored by the notes' evidence: the notes reach the prediction only as concepts with published
likelihood ratios (``medmm.notes``), so a word's score is its concept's effect on the finding's log-odds."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from medmm.prediction import Prediction

# a word (letters/digits joined by . ' ’ % / + -, an optional trailing %) or one punctuation mark
WORD = re.compile(r"[^\W_]+(?:[.'’%/+-][^\W_]+)*%?|[^\w\s]")


def evidence_tokens(notes: str | None, prediction: "Prediction", finding: str) -> tuple[list[tuple[str, float]],
                                                                                   dict[str, Any]]:
    """Note words scored by what the notes' evidence did to ``finding`` (``medmm.notes``): the words of a concept
    and of the cue that set its assertion ("no", "denies") get that concept's effect on the finding's log-odds
    (leave-one-out over the evidence, exact for a lone concept), scaled so the largest is +-1; other words get NaN
    (shown unscored). Red raises the finding, blue lowers it, for every finding and every population.

    Returns (words in notes order, {"method": "evidence", "effects": [{concept, text, effect}], ...})."""
    from medmm.notes.evidence import item_effects

    ev, prior = prediction.notes_evidence, prediction.prior_states
    if not notes or ev is None:
        return [], {"method": "evidence", "effects": []}
    effects = [(e, x) for e, x in item_effects(prior, ev, finding) if e.used]
    spans: list[tuple[int, int, float]] = []
    for e, x in effects:
        spans.append((e.start, e.end, x))
        if e.cue is not None:
            spans.append((e.cue[0], e.cue[1], x))
    words = [(m.group(0), m.start(), m.end()) for m in WORD.finditer(notes)]
    scores = []
    for w, a, b in words:
        hit = [x for s0, s1, x in spans if a < s1 and s0 < b]
        scores.append(max(hit, key=abs) if hit else float("nan"))
    top = max((abs(x) for x in scores if np.isfinite(x)), default=0.0)
    out = [(w, (x / top if top > 0 else 0.0) if np.isfinite(x) else float("nan"))
           for (w, _, _), x in zip(words, scores)]
    summary = {"method": "evidence", "finding": finding,
               "effects": [{"concept": e.concept, "text": e.text, "finding": e.finding, "lr": e.lr,
                            "effect_logodds": round(x, 4)} for e, x in effects]}
    return out, summary


__all__ = ["WORD", "evidence_tokens"]
