"""DICOM pixel values to display: size cap, padding, Modality LUT, VOI (LUT or window) and MONOCHROME1 inversion.

Stored values -> modality values (Modality LUT Sequence or rescale) -> VOI to [0, 1] (VOI LUT Sequence, else the
first Window Center/Width, else robust min-max) -> MONOCHROME2 sense; padding pixels are excluded and shown black.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from medmm.io.dicom_header import _as_list, _attr, _floats, _Header, _int
from medmm.io.pixels import (_block_reduce, _check_finite, _check_not_blank, _downsample_note, _fmt, _min_max,
                             _reduce_factor, _window)
from medmm.io.scan import ScanError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset


def _cap_stored(stored: np.ndarray, ds: Dataset, notes: list[str]) -> np.ndarray:
    """Downsample decoded stored values ``[H, W(, 3)]`` so the long side is <= MAX_SIDE_PX, keeping their dtype.

    Block mean rounded to the stored integer type (modality/VOI LUTs then apply as usual); every k-th pixel when the
    file declares padding values, so that padding stays exactly recognisable.
    """
    h, w = stored.shape[:2]
    k = _reduce_factor(h, w)
    if k == 1:
        return stored
    nearest = "PixelPaddingValue" in ds
    out = _block_reduce(stored, k, nearest=nearest)
    if stored.dtype.kind in "iub" and out.dtype != stored.dtype:
        out = np.rint(out).astype(stored.dtype)
    notes.append(_downsample_note(w, h, out.shape[1], out.shape[0], "nearest pixel" if nearest else "area average"))
    return out


def _padding_mask(stored: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Pixels equal to PixelPaddingValue (or within PixelPaddingRangeLimit), in stored values."""
    pad = _padding_int(ds, "PixelPaddingValue")
    if pad is None:
        return None
    limit = _padding_int(ds, "PixelPaddingRangeLimit")
    lo, hi = (pad, pad) if limit is None else (min(pad, limit), max(pad, limit))
    mask = (stored >= lo) & (stored <= hi)
    return mask if mask.any() else None


def _padding_int(ds: Dataset, keyword: str) -> int | None:
    """US/SS value that may arrive as raw bytes when the VR was ambiguous (implicit VR files)."""
    if keyword not in ds:
        return None
    value = ds[keyword].value
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 2:
            return None
        little = ds.file_meta.TransferSyntaxUID.is_little_endian
        return int.from_bytes(value, "little" if little else "big", signed=ds.get("PixelRepresentation") == 1)
    return _int(value)


def _modality_values(stored: np.ndarray, ds: Dataset, frame: int, notes: list[str]) -> np.ndarray:
    """Modality LUT: the Modality LUT Sequence, else RescaleSlope/Intercept (incl. functional groups)."""
    if stored.dtype.kind == "f":  # float pixel data has no modality LUT
        return stored.astype(np.float32)
    lut_seq = ds.get("ModalityLUTSequence")
    if lut_seq:
        try:
            lut, first = _lut_array(lut_seq[0], ds)
        except Exception:  # noqa: BLE001
            raise ScanError("invalid DICOM Modality LUT Sequence") from None
        if "Modality LUT Sequence applied" not in notes:
            notes.append("Modality LUT Sequence applied")
        return _apply_lut(stored, lut, first)
    slope = _floats(_attr(ds, frame, "RescaleSlope", "PixelValueTransformationSequence"), 1)
    intercept = _floats(_attr(ds, frame, "RescaleIntercept", "PixelValueTransformationSequence"), 1)
    values = stored.astype(np.float32)
    if slope is None and intercept is None:
        return values
    s, b = (slope or [1.0])[0], (intercept or [0.0])[0]
    if (s, b) != (1.0, 0.0):
        values = values * np.float32(s) + np.float32(b)
    return values


def _lut_array(item: Dataset, ds: Dataset) -> tuple[np.ndarray, int]:
    """(LUT entries, first mapped value) of a Modality/VOI LUT item; US, SS or OW LUT Data.

    Read here rather than through ``pydicom.pixels.apply_modality_lut`` / ``apply_voi``: pydicom 3.0
    builds dtype ``uint{bits}`` (fails for 12-bit LUTs) and indexes in the LUT's output dtype
    (wrapping for 8-bit LUTs with more than 256 entries).
    """
    descriptor = [int(v) for v in item.LUTDescriptor]
    entries, first = descriptor[0] or 65536, descriptor[1]
    elem = item["LUTData"]
    if isinstance(elem.value, (bytes, bytearray)):
        order = "<" if ds.file_meta.TransferSyntaxUID.is_little_endian else ">"
        lut = np.frombuffer(elem.value, dtype=f"{order}u2")[:entries]
    else:
        lut = np.asarray(_as_list(elem.value), dtype=np.float64)
    if lut.size < 2:
        raise ValueError("LUT too short")
    return lut.astype(np.float32), first


def _apply_lut(values: np.ndarray, lut: np.ndarray, first: int) -> np.ndarray:
    """Values below ``first`` map to the first entry, beyond the table to the last (PS3.3 C.11.1/C.11.2)."""
    idx = np.clip(np.rint(values.astype(np.float64)) - first, 0, lut.size - 1).astype(np.int64)
    return lut[idx]


def _voi(values: np.ndarray, valid: np.ndarray | None, ds: Dataset, frame: int,
         notes: list[str]) -> tuple[np.ndarray, str]:
    """VOI to [0, 1]: VOI LUT Sequence (its output range scaled to [0, 1]), else the first Window
    Center/Width, else robust min-max of the valid pixels."""
    voi_seq = ds.get("VOILUTSequence")
    if voi_seq:
        try:
            lut, first = _lut_array(voi_seq[0], ds)
            lo, hi = float(lut.min()), float(lut.max())
            if hi <= lo:
                raise ValueError("flat LUT")
        except Exception:  # noqa: BLE001
            notes.append("VOI LUT Sequence unusable; ignored")
        else:
            out = (_apply_lut(values, lut, first) - lo) / np.float32(hi - lo)
            label = "VOI LUT" + (f" (first of {len(voi_seq)})" if len(voi_seq) > 1 else "")
            if ds.get("WindowCenter") is not None:
                notes.append("VOI LUT Sequence used; Window Center/Width ignored")
            return _unless_flat(out, values, valid, label, notes)
    centers = _attr(ds, frame, "WindowCenter", "FrameVOILUTSequence")
    widths = _attr(ds, frame, "WindowWidth", "FrameVOILUTSequence")
    if centers is not None and widths is not None:
        center, width = _floats(centers, 1), _floats(widths, 1)
        function = str(_attr(ds, frame, "VOILUTFunction", "FrameVOILUTSequence") or "LINEAR").strip().upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            notes.append("unknown VOI LUT Function; LINEAR used")
            function = "LINEAR"
        if center is None or width is None or width[0] < (1 if function == "LINEAR" else 1e-6):
            notes.append("invalid Window Center/Width; min-max used")
        else:
            c, w = center[0], width[0]
            count = len(_as_list(centers))
            label = f"window C={_fmt(c)} W={_fmt(w)}" + ("" if function == "LINEAR" else f" {function}")
            if count > 1:
                notes.append(f"{count} window presets in the file; the first (C={_fmt(c)} W={_fmt(w)}) was used")
            return _unless_flat(_window(values, c, w, function), values, valid, label, notes)
    return _min_max(values, valid)


def _unless_flat(out: np.ndarray, values: np.ndarray, valid: np.ndarray | None, label: str,
                 notes: list[str]) -> tuple[np.ndarray, str]:
    """Fall back to min-max when the file's VOI would show a uniform image (avoid a silent blank)."""
    sample = out if valid is None else out[valid]
    if sample.size and float(sample.max()) - float(sample.min()) < 1e-6:
        notes.append(f"the file's {label} shows a uniform image; min-max used instead")
        return _min_max(values, valid)
    return out.astype(np.float32, copy=False), label


def _inversion(ds: Dataset, header: _Header, notes: list[str]) -> bool:
    """MONOCHROME1 (or MONOCHROME2 with an INVERSE presentation LUT) is displayed inverted."""
    shape = str(ds.get("PresentationLUTShape") or "").strip().upper()
    if header.photometric == "MONOCHROME1":
        notes.append("MONOCHROME1 inverted to MONOCHROME2 (bright = dense)")
        return True
    if header.photometric in ("MONOCHROME2", None) and shape == "INVERSE":
        notes.append("INVERSE presentation LUT applied")
        return True
    return False


def _radiograph_pixels(stored: np.ndarray, ds: Dataset, header: _Header,
                       notes: list[str]) -> tuple[np.ndarray, str, bool]:
    """Stored values -> modality -> VOI -> MONOCHROME2 sense, padding black."""
    _check_finite(stored)
    padding = _padding_mask(stored, ds)
    valid = None if padding is None else ~padding
    values = _modality_values(stored, ds, 0, notes)
    _check_finite(values)
    _check_not_blank(values, valid)
    out, windowing = _voi(values, valid, ds, 0, notes)
    inverted = _inversion(ds, header, notes)
    if inverted:
        out = 1.0 - out
    if padding is not None:
        out[padding] = 0.0
        notes.append(f"{int(padding.sum())} padding pixels excluded and set to black")
    return np.ascontiguousarray(out, dtype=np.float32), windowing, inverted
