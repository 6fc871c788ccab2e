"""The vignette suites (``tests/data/vignettes*.json``): does a note move each finding the way a clinician expects?

A vignette is a note and, per finding, the expected direction relative to the image alone: ``up``, ``down`` or
``same``. ``run`` predicts every film alone and with every note through the pipeline; ``judge`` compares in
log-odds (a film already at 0.999 still counts as moved) and calls ``same`` kept when no probability moves by
``SAME_TOL`` or more. Used by ``scripts/notes_vignettes.py`` (the measured share) and ``tests/test_notes.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from medmm.notes.evidence import logit

SAME_TOL = 0.01


def load(path: str | Path) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def judge(expected: str, before: float, after: float) -> bool:
    if expected == "same":
        return abs(after - before) < SAME_TOL
    d = logit(after) - logit(before)
    return d > 0 if expected == "up" else d < 0


def run(pipeline: Any, films: Iterable[tuple[str, Path]], vignettes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (film, vignette, finding named in the vignette): the probabilities before and after, and
    whether the move has the expected sign. ``films``: (group, path) pairs."""
    cases = []
    for group, film in films:
        inputs = pipeline.prepare([film], None)
        alone = pipeline.predict_prepared(inputs)
        for v in vignettes:
            with_note = pipeline.predict_prepared(pipeline.prepare(inputs.scans, v["note"]))
            for finding, expected in v["expected"].items():
                before, after = alone.findings[finding], with_note.findings[finding]
                cases.append({"group": group, "film": Path(film).name, "vignette": v["id"], "finding": finding,
                              "expected": expected, "before": before, "after": after,
                              "optional": bool(v.get("optional")), "population": v["population"],
                              "ok": judge(expected, before, after)})
    return cases
