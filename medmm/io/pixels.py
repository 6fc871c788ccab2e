"""Pixel maths shared by the Pillow and DICOM loaders: luma, checks, windowing, downsampling to the side limit."""

from __future__ import annotations

import math

import numpy as np

from medmm.io import limits
from medmm.io.scan import ScanError

ROBUST_PERCENTILES = (0.5, 99.5)
"""Percentiles of the non-padding pixels used for min-max windowing when a file carries no VOI."""
_PERCENTILE_SAMPLE = 4_000_000  # pixels; larger images are subsampled (strided) for percentiles


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an [..., 3] array, as float32 in the input's units."""
    rgb = rgb.astype(np.float32, copy=False)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)


def _check_finite(values: np.ndarray) -> None:
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ScanError("the image contains NaN or infinite pixel values")


def _check_not_blank(values: np.ndarray, valid: np.ndarray | None = None) -> None:
    sample = values if valid is None else values[valid]
    if sample.size == 0 or sample.min() == sample.max():
        raise ScanError("blank image: all pixels have the same value")


def _robust_range(values: np.ndarray, valid: np.ndarray | None) -> tuple[float, float]:
    """0.5-99.5 percentile range of the valid pixels (true min/max when the percentiles coincide)."""
    sample = (values if valid is None else values[valid]).ravel()
    if sample.size > _PERCENTILE_SAMPLE:
        sample = sample[:: math.ceil(sample.size / _PERCENTILE_SAMPLE)]
    lo, hi = (float(v) for v in np.percentile(sample, ROBUST_PERCENTILES))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return lo, hi


def _min_max(values: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, str]:
    lo, hi = _robust_range(values, valid)
    out = np.clip((values.astype(np.float32) - lo) / np.float32(hi - lo), 0.0, 1.0)
    return out, f"min-max ({ROBUST_PERCENTILES[0]:g}-{ROBUST_PERCENTILES[1]:g} percentiles)"


def _window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM windowing (PS3.3 C.11.2.1.2-3) straight to [0, 1].

    pydicom's ``apply_windowing`` maps to the stored-bits range instead, which would need undoing.
    """
    x = values.astype(np.float32)
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width == 1:  # LINEAR with width 1 is a threshold at c - 0.5
        return (x > center - 0.5).astype(np.float32)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _fmt(v: float) -> str:
    return f"{v:g}"


def _reduce_factor(height: int, width: int) -> int:
    return max(1, math.ceil(max(height, width) / limits.MAX_SIDE_PX))


def _downsample_note(width: int, height: int, new_width: int, new_height: int, how: str) -> str:
    return (f"downsampled from {width}x{height} to {new_width}x{new_height} ({how}; "
            f"long side limit {limits.MAX_SIDE_PX} px)")


def _block_reduce(arr: np.ndarray, k: int, *, nearest: bool = False) -> np.ndarray:
    """Downsample the first two axes of ``arr`` by ``k``: block mean (float32) or, with ``nearest``, every k-th pixel.

    Edges that do not fill a whole block are averaged over the pixels they have; memory is bounded by working in
    strips of rows (no full-size float copy).
    """
    if k <= 1:
        return arr
    if nearest:
        return np.ascontiguousarray(arr[::k, ::k])
    h, w = arr.shape[:2]
    oh, ow = -(-h // k), -(-w // k)
    out = np.empty((oh, ow) + arr.shape[2:], dtype=np.float32)
    strip = max(1, 256 // k) * k
    col_starts = np.arange(0, w, k)
    counts_w = np.minimum(k, w - col_starts).astype(np.float32)
    for r0 in range(0, h, strip):
        block = arr[r0:r0 + strip].astype(np.float32)
        rows_sum = np.add.reduceat(block, np.arange(0, block.shape[0], k), axis=0)
        counts_h = np.minimum(k, block.shape[0] - np.arange(0, block.shape[0], k)).astype(np.float32)
        sums = np.add.reduceat(rows_sum, col_starts, axis=1)
        shape = (-1, 1) + (1,) * (arr.ndim - 2)
        out[r0 // k:r0 // k + sums.shape[0]] = sums / counts_h.reshape(shape) / counts_w.reshape((1, -1) + (1,) * (arr.ndim - 2))
    return out


def _cap_side(pixels: np.ndarray, notes: list[str], *, nearest: bool = False) -> np.ndarray:
    """Area-average ``[H, W(, C)]`` pixels so that the long side is <= MAX_SIDE_PX (noted)."""
    h, w = pixels.shape[:2]
    k = _reduce_factor(h, w)
    if k == 1:
        return pixels
    out = _block_reduce(pixels, k, nearest=nearest)
    notes.append(_downsample_note(w, h, out.shape[1], out.shape[0], "nearest pixel" if nearest else "area average"))
    return out.astype(pixels.dtype, copy=False) if pixels.dtype.kind == "f" else out
