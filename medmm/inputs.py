"""What one request gives the model: the limits, the notes' cleaning, and ``ModelInputs`` (torch-free).

``Pipeline.prepare`` makes a ``ModelInputs``; the prediction reads its numpy ``array``, explanations and the bench
its tensor view ``pixels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from medmm import caveats
from medmm.io import Scan
from medmm.text import strip_controls

if TYPE_CHECKING:
    import torch

ScanInput = Union[str, Path, bytes, Scan]
MAX_NOTES_CHARS = 20_000       # more than any clinical indication; longer input is cut (with a warning)
MAX_SCANS = 8                  # views per request


class InputError(ValueError):
    """A request the pipeline cannot answer (no inputs, too many scans, ...); message is user-facing."""


def clean_notes(notes: str | None) -> tuple[str | None, list[str]]:
    """Strip control characters and excess whitespace; cap the length. Returns (notes or None, warnings)."""
    if notes is None:
        return None, []
    warnings: list[str] = []
    if len(notes) > MAX_NOTES_CHARS:
        notes = notes[:MAX_NOTES_CHARS]
        warnings.append(caveats.notes_cut(MAX_NOTES_CHARS))
    notes = " ".join(strip_controls(notes).split())   # medmm.text: controls -> spaces, format characters dropped
    return (notes or None), warnings


@dataclass
class ModelInputs:
    """What one request's model stages read, plus what was loaded (explanations reuse these)."""

    scans: list[Scan]
    array: np.ndarray | None             # [1, V, C, S, S] float32 model input (``pixels``: the same as a tensor)
    input_ids: "torch.Tensor | None"     # [1, T], filled by Pipeline.tokens when the torch text path needs them
    attention_mask: "torch.Tensor | None"  # [1, T]
    notes: str | None
    warnings: list[str]
    # the input gate (medmm.gate): why the request is refused (None = analysed), and what it saw in each scan
    refusal: str | None = None
    gate: list[dict] = field(default_factory=list)
    # per-view image features once computed for this request ([1, V, F], from whichever encoder the pipeline runs):
    # the explanation and its saliency check reuse the prediction's instead of encoding the film again
    view_cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    device: str = "cpu"
    _tensor: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def pixels(self) -> "torch.Tensor | None":
        """The model input as a tensor on the pipeline's device (for torch callers: explanations, the bench);
        made on first use, sharing ``array``'s memory on a CPU."""
        if self.array is None:
            return None
        if self._tensor is None:
            import torch

            with torch.inference_mode(False):  # a normal tensor even when first asked for inside a prediction
                self._tensor = torch.from_numpy(self.array).to(self.device)
        return self._tensor


__all__ = ["InputError", "MAX_NOTES_CHARS", "MAX_SCANS", "ModelInputs", "ScanInput", "clean_notes"]
