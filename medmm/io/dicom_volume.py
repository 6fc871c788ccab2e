"""DICOM volumes (CT/MR/PT/NM, one slice per file or an enhanced multi-frame): slices sorted along their normal,
stacked in modality units and windowed for display (CT: ``CT_DISPLAY_WINDOW``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medmm.io.dicom_header import _attr, _fg_item, _floats, _Header
from medmm.io.dicom_meta import _dicom_metadata
from medmm.io.dicom_pixels import _cap_stored, _inversion, _modality_values, _padding_mask, _voi
from medmm.io.pixels import _check_finite, _check_not_blank, _fmt, _window
from medmm.io.scan import Scan

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset


CT_DISPLAY_WINDOW = (-400.0, 1500.0)
"""(centre, width) in HU for CT display: lung parenchyma to soft tissue (-1150..350 HU)."""


def _has_plane_positions(ds: Dataset, frames: int) -> bool:
    """Enhanced multi-frame files with per-frame plane positions are volumes whatever the modality."""
    return frames > 1 and _fg_item(ds, 1, "PlanePositionSequence") is not None


class _Slice:
    """One slice: modality values, padding mask and its position along the slice normal."""

    def __init__(self, stored: np.ndarray, ds: Dataset, frame: int, notes: list[str]) -> None:
        stored = _cap_stored(stored, ds, notes)
        _check_finite(stored)
        self.padding = _padding_mask(stored, ds)
        self.values = _modality_values(stored, ds, frame, notes)
        _check_finite(self.values)
        self.position = _floats(_attr(ds, frame, "ImagePositionPatient", "PlanePositionSequence"), 3)
        self.orientation = _floats(_attr(ds, frame, "ImageOrientationPatient", "PlaneOrientationSequence"), 6)
        number = ds.get("InstanceNumber") if frame == 0 and "PerFrameFunctionalGroupsSequence" not in ds else None
        self.instance = _floats(number, 1)


def _sort_slices(slices: list[_Slice], notes: list[str]) -> list[_Slice]:
    """Sort along the slice normal (ImagePositionPatient . (row x col)); else InstanceNumber."""
    if len(slices) == 1:
        return slices
    ref = slices[0].orientation
    if ref is not None and all(s.position is not None for s in slices):
        normal = np.cross(np.asarray(ref[:3]), np.asarray(ref[3:]))
        if np.linalg.norm(normal) > 1e-6:
            normal /= np.linalg.norm(normal)
            if any(s.orientation is None or not np.allclose(s.orientation, ref, atol=1e-3) for s in slices):
                notes.append("slices have different orientations; sorted along the first slice's normal")
            keyed = sorted(slices, key=lambda s: float(np.dot(s.position, normal)))  # type: ignore[arg-type]
            gaps = np.diff([float(np.dot(s.position, normal)) for s in keyed])  # type: ignore[arg-type]
            spacing_mm = float(np.median(gaps))
            notes.append(f"{len(slices)} slices sorted by ImagePositionPatient; spacing {_fmt(round(spacing_mm, 3))} mm")
            if (gaps < 1e-3).any():
                notes.append("duplicate slice positions")
            elif gaps.max() - gaps.min() > 0.1 * max(spacing_mm, 1e-6):
                notes.append("uneven slice spacing")
            return keyed
    if all(s.instance is not None for s in slices):
        notes.append(f"{len(slices)} slices sorted by InstanceNumber (no usable ImagePositionPatient)")
        return sorted(slices, key=lambda s: s.instance[0])  # type: ignore[index]
    notes.append(f"{len(slices)} slices kept in the given order (no position or instance number)")
    return slices


def _volume_scan(slices: list[_Slice], ref: Dataset, header: _Header, notes: list[str]) -> Scan:
    """Stack sorted slices into a volume in modality units and window it for display."""
    slices = _sort_slices(slices, notes)
    volume = np.stack([s.values for s in slices]).astype(np.float32)  # [D, H, W]
    padding = None
    if any(s.padding is not None for s in slices):
        padding = np.stack([s.padding if s.padding is not None else np.zeros(s.values.shape, bool) for s in slices])
    valid = None if padding is None else ~padding
    _check_not_blank(volume, valid)
    modality = header.modality
    if modality == "CT":
        center, width = CT_DISPLAY_WINDOW
        display = _window(volume, center, width)
        windowing = f"CT chest window C={_fmt(center)} W={_fmt(width)} HU"
        notes.append("CT image, not a radiograph: volume in HU, shown with a wide chest window")
    else:
        display, windowing = _voi(volume, valid, ref, 0, notes)
        notes.append(f"{modality or 'cross-sectional'} image, not a radiograph: volume in modality units")
    inverted = _inversion(ref, header, notes)
    if inverted:
        display = 1.0 - display
    if padding is not None:
        display[padding] = 0.0
        volume[padding] = float(volume[valid].min())
        notes.append(f"{int(padding.sum())} padding voxels excluded (black; volume set to its minimum)")
    display = np.ascontiguousarray(display, dtype=np.float32)
    depth = volume.shape[0]
    if header.frames > 1:
        notes.append(f"multi-frame file treated as a volume of {depth} slices")
    meta = _dicom_metadata(ref, header, depth, windowing, inverted, notes)
    return Scan(pixels=display[depth // 2].copy(), metadata=meta, volume=volume, volume_pixels=display)
