"""What loading produces: ``Scan`` (pixels, optional volume) with its ``ScanMetadata``, or a ``ScanError``."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np


class ScanError(ValueError):
    """Clear, user-facing reason a file cannot be used (one line, no identifiers)."""


# never turned into a ScanError (everything else a loader raises is)
_EXIT_EXCEPTIONS = (KeyboardInterrupt, SystemExit, GeneratorExit)


@dataclass(frozen=True)
class ScanMetadata:
    """Non-identifying facts about a loaded scan (no names, IDs, dates, institutions or UIDs)."""

    source_format: str  # "dicom" | "png" | "jpeg" | "gif" | "tiff" | "bmp" | "webp" | "jpeg2000"
    modality: str | None  # DICOM Modality (CR, DX, CT, MR...) or None for plain images
    view: str | None  # ViewPosition (PA/AP/LL...) when present
    photometric_interpretation: str | None
    bits_stored: int | None
    pixel_spacing_mm: tuple[float, float] | None  # (row, column) spacing: PixelSpacing or ImagerPixelSpacing
    transfer_syntax: str | None  # name, e.g. "JPEG Baseline (Process 1)"
    rows: int
    columns: int
    frames: int
    windowing: str | None  # what VOI was applied: "VOI LUT", "window C=.. W=..", "min-max ...", ...
    inverted: bool  # MONOCHROME1 (or an INVERSE presentation LUT) was inverted
    notes: tuple[str, ...] = ()  # data-quality remarks
    # Salted (per-process random salt) HMACs of the DICOM patient / study identifiers, only so that scans of
    # one request can be compared (medmm.study); never shown, logged or exported (not in repr or to_dict).
    patient_key: str | None = field(default=None, repr=False, compare=False, metadata={"private": True})
    study_key: str | None = field(default=None, repr=False, compare=False, metadata={"private": True})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists); the private comparison keys are left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.metadata.get("private"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class Scan:
    """A loaded image: display-ready ``pixels`` and, for CT/MR, the volume in modality units."""

    pixels: np.ndarray  # [H, W] float32 in [0, 1], windowed, MONOCHROME2 sense, EXIF orientation applied
    metadata: ScanMetadata
    volume: np.ndarray | None = None  # [D, H, W] float32 modality units (HU for CT), sorted; None for radiographs
    volume_pixels: np.ndarray | None = None  # [D, H, W] float32 [0, 1] windowed for a slice viewer

    def __repr__(self) -> str:  # arrays summarised: a full numpy repr is noise in logs
        vol = None if self.volume is None else tuple(self.volume.shape)
        return f"Scan(pixels={tuple(self.pixels.shape)}, volume={vol}, metadata={self.metadata!r})"
