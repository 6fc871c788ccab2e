"""Typed results shared by the pipeline, report, app and CLI (numpy only, no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """One request's model output.

    ``findings`` maps every finding (in ``FINDINGS`` order) to a calibrated probability in [0, 1];
    ``thresholds`` holds the stored operating point per finding; ``positive`` the findings at or above it.
    """

    findings: dict[str, float]
    thresholds: dict[str, float]
    positive: tuple[str, ...]
    modalities: tuple[str, ...]                      # which inputs were present: "image", "notes"
    notes_embedding: np.ndarray | None = None        # [384] text-encoder embedding of the notes (L2-normalised)
    image_embedding: np.ndarray | None = None        # [D] pooled image embedding (mean over scans)
    ood_score: float | None = None                   # Mahalanobis distance of the image embedding
    ood_threshold: float | None = None
    warnings: tuple[str, ...] = ()
    scan_metadata: tuple[dict[str, Any], ...] = ()   # safe, non-identifying metadata per scan
    checkpoint: dict[str, Any] = field(default_factory=dict)  # name, version, sha256, trained
    # what the notes contributed: medmm.notes.NotesEvidence (concepts, assertions, likelihood ratios), the image's
    # own answer before the update, and the pre-test probability a notes-only request started from
    notes_evidence: Any = field(default=None, compare=False)
    image_findings: dict[str, float] | None = None
    pretest: dict[str, Any] | None = None
    prior_states: np.ndarray | None = field(default=None, compare=False)  # the states the notes' evidence updated
    # one medmm.calls.Call per finding (called or not, band, why): the one source of every output's words
    calls: tuple[Any, ...] = ()
    population: str | None = None                    # the scope table's row: "child" | "adult" | "no image"
    status: str = "ok"                               # "ok" | "refused" (the input gate: not a chest radiograph)
    refusal: str | None = None                       # why the input was refused (a sentence for the user)

    def call(self, finding: str):
        """The ``medmm.calls.Call`` for ``finding``; a prediction built without calls (by hand, in a test) gets one
        that follows its ``positive``."""
        for c in self.calls:
            if c.finding == finding:
                return c
        from medmm.calls import R_NOT_CALLED, Call, band_of

        p, t, called = float(self.findings[finding]), float(self.thresholds[finding]), finding in self.positive
        band = band_of(p, t, called)
        return Call(finding, p, t, called, band, R_NOT_CALLED if band == "withheld" else "")

    def evidence_json(self) -> dict[str, Any]:
        """The notes' part of ``predict --json``: every concept read, how, and what it did."""
        ev = self.notes_evidence
        return {"notes_evidence": [] if ev is None else ev.to_list(),
                "notes_population": None if ev is None else {"population": ev.population, "from": ev.population_from},
                "notes_log_lr": {} if ev is None else {f: round(v, 4) for f, v in ev.log_lr.items()},
                "findings_image_only": self.image_findings, "pretest": self.pretest}

    def band(self, finding: str) -> str:
        """The finding's band (``medmm.calls``): 'likely' | 'possible' (called), 'withheld' | 'uncertain' |
        'unlikely' (not called), 'not assessed' (out of the checkpoint's scope)."""
        return self.call(finding).band
