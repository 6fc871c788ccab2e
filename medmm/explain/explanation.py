"""What an explanation returns (:class:`Explanation`, plain numpy), the error it raises, and what it attributes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medmm.explain.methods import METHOD_NAMES
from medmm.pipeline import InputError

TARGET = "calibrated_logit"  # logit / temperature of the explained finding; see medmm.explain.attribution


class ExplainError(InputError):
    """A request that cannot be explained (unknown finding or method, bad view index); message is user-facing.

    A subclass of ``pipeline.InputError`` (itself a ``ValueError``) so the CLI maps it to exit code 2 and the app
    shows it like any other input problem.
    """


@dataclass
class Explanation:
    """Attributions for one finding of one request (numpy only; render with ``medmm.explain.render``)."""

    finding: str
    probability: float                     # calibrated probability of ``finding`` (as in the Prediction)
    method: str                            # a key of medmm.explain.methods.REGISTRY
    target: str = TARGET
    view: int | None = None                # index of the explained scan in ``inputs.scans``; None without scans
    heatmap: np.ndarray | None = None      # [S, S] in [0, 1] on the model-input grid: positive evidence, for display
    heatmap_scan: np.ndarray | None = None  # [H, W] = heatmap resized to the explained scan's own shape/aspect
    attributions: np.ndarray | None = None  # [S, S] signed raw map in calibrated-logit units (channels combined)
    tokens: list[tuple[str, float]] = field(default_factory=list)  # (word, score in [-1, 1]) in notes order
    modality: dict[str, Any] = field(default_factory=dict)
    sanity: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # caveats worth showing next to the picture

    def to_summary(self) -> dict[str, Any]:
        """JSON-friendly summary without the arrays (NaN becomes null)."""
        return json_safe({
            "finding": self.finding, "probability": self.probability, "method": self.method,
            "method_name": METHOD_NAMES[self.method], "target": self.target, "view": self.view,
            "heatmap_shape": None if self.heatmap is None else list(self.heatmap.shape),
            "heatmap_scan_shape": None if self.heatmap_scan is None else list(self.heatmap_scan.shape),
            "tokens": [[w, s] for w, s in self.tokens], "modality": self.modality, "sanity": self.sanity,
            "timings_s": self.timings_s, "notes": self.notes,
        })


def json_safe(value: Any) -> Any:
    """Numpy scalars to Python, NaN/inf to None, tuples to lists (for json.dumps)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return value


__all__ = ["TARGET", "ExplainError", "Explanation", "json_safe"]
