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

    def band(self, finding: str) -> str:
        """Probability band used for hedged wording: 'negative', 'possible', 'likely'."""
        p, t = self.findings[finding], self.thresholds[finding]
        if p >= max(t, 0.5) + 0.5 * (1 - max(t, 0.5)):
            return "likely"
        if p >= t:
            return "possible"
        return "negative"
