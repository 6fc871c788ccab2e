"""Scan (float [0,1] grayscale) -> encoder input in numpy: the torch-free twin of ``transforms.to_model_input``.

The torch-free prediction path (``medmm.runtime.graphs``) cannot call ``torch.nn.functional.interpolate``, so this
module computes what it computes for ``mode="bilinear", align_corners=False, antialias=True`` on a float32 image:
torch's separable antialiased resampling (the kernel Pillow uses: a triangle filter stretched by the scale when
shrinking), width first, then height, with torch's float32 weights - each tap's weight and the normalisation are
rounded as torch's CPU kernel rounds them, so the weights are bit-identical and the output differs from torch's by
float32 rounding only (<= 2e-7 on real films; ``tests/test_torch_free.py`` checks 1e-6).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from medmm.config import Preprocessing

_F32 = np.float32


@lru_cache(maxsize=32)
def _taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(index [out, K], weight [out, K])``: the input pixels each output pixel reads and their float32 weights
    (torch's ``_compute_weights_aa`` for the bilinear filter, same roundings; unused taps have weight 0)."""
    scale = _F32(in_size) / _F32(out_size)
    shrink = bool(scale >= 1.0)
    support = scale if shrink else _F32(1.0)
    invscale = _F32(1.0 / np.float64(scale)) if shrink else _F32(1.0)
    centre = (np.float64(scale) * (np.arange(out_size, dtype=np.float64) + 0.5)).astype(_F32)     # [out]
    lo = np.maximum(((centre - support).astype(np.float64) + 0.5).astype(np.int64), 0)
    hi = np.minimum(((centre + support).astype(np.float64) + 0.5).astype(np.int64), in_size)
    width = int(np.ceil(np.float64(support))) * 2 + 1
    size = np.clip(hi - lo, 0, width)
    j = np.arange(width)
    index = lo[:, None] + j[None, :]                                                               # [out, K]
    arg = (((index.astype(_F32) - centre[:, None]).astype(np.float64) + 0.5) * np.float64(invscale)).astype(_F32)
    a = np.abs(arg)
    w = np.where(a < 1.0, (1.0 - a.astype(np.float64)).astype(_F32), _F32(0.0))
    w = np.where(j[None, :] < size[:, None], w, _F32(0.0)).astype(_F32)
    total = np.cumsum(w, axis=1, dtype=_F32)[:, -1:]                                             # sequential sum
    w = np.where(total != 0, w / np.where(total != 0, total, _F32(1.0)), w).astype(_F32)
    return np.minimum(index, in_size - 1), w


def _resample_first_axis(x: np.ndarray, out_size: int) -> np.ndarray:
    """``[N, M]`` -> ``[out_size, M]`` along the first axis (whole rows gathered per tap: contiguous copies); each
    output a sequential float32 sum over its taps."""
    index, w = _taps(x.shape[0], out_size)
    out = x[index[:, 0]] * w[:, 0, None]
    for k in range(1, index.shape[1]):
        out += x[index[:, k]] * w[:, k, None]
    return out


def resize_antialias(pixels: np.ndarray, size: int) -> np.ndarray:
    """``[H, W]`` float32 -> ``[size, size]``: ``F.interpolate(mode="bilinear", align_corners=False,
    antialias=True)``, width first, then height (each pass on the transposed image, so it gathers rows)."""
    x = np.asarray(pixels, dtype=_F32)
    across = _resample_first_axis(np.ascontiguousarray(x.T), size) if x.shape[1] != size else x.T   # [size, H]
    x = np.ascontiguousarray(across.T)                                                           # [H, size]
    return _resample_first_axis(x, size) if x.shape[0] != size else x


def to_model_array(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """``[H, W]`` float in [0, 1] -> normalised ``[C, S, S]`` float32 (squashed, no crop, as in training)."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {pixels.shape}")
    s = prep.input_size
    x = np.ascontiguousarray(pixels, dtype=_F32)
    if x.shape != (s, s):
        x = resize_antialias(x, s)
    x = np.clip(x, _F32(0), _F32(1))
    mean = np.asarray(prep.mean, _F32)[:, None, None]
    std = np.asarray(prep.std, _F32)[:, None, None]
    return ((np.broadcast_to(x, (prep.channels, s, s)) - mean) / std).astype(_F32)


__all__ = ["resize_antialias", "to_model_array"]
