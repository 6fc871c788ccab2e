"""Scan (float [0,1] grayscale) -> encoder input, using the preprocessing stored with the weights."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medmm.config import Preprocessing


def to_model_input(pixels: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """``[H, W]`` float in [0, 1] -> normalised ``[C, S, S]``. Squashes (no crop) to match the training images."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {pixels.shape}")
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]  # [1, 1, H, W]
    s = prep.input_size
    if x.shape[-2:] != (s, s):
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
    x = x.clamp(0, 1)[0].expand(prep.channels, s, s)
    mean = torch.tensor(prep.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(prep.std, dtype=torch.float32)[:, None, None]
    return (x - mean) / std


def radiograph_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augment a ``[C, S, S]`` normalised input the way radiographs vary between sites.

    Small rotation (±7°), scale/translation (crop 80–100 %), brightness/contrast/gamma jitter, and with
    probability 1/2 a random flat patch in one corner band (where laterality markers and burnt-in text sit), so
    that markers stop being a site signature.
    No horizontal flip: it moves the heart to the wrong side (situs) and changes what "left" means.
    """
    c, s, _ = x.shape

    def u(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    angle = np.deg2rad(u(-7, 7))
    scale = u(0.80, 1.0)
    tx, ty = u(-0.05, 0.05), u(-0.05, 0.05)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    theta = torch.tensor([[cos, -sin, tx], [sin, cos, ty]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, [1, c, s, s], align_corners=False)
    # pad with the image's darkest value (black border, as collimated radiographs have)
    lo = x.amin()
    out = F.grid_sample((x - lo)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0] + lo
    # intensity jitter in [0,1] space, then back (mean=std=0.5 assumed not: compute generally)
    img01 = (out - lo) / (out.amax() - lo).clamp_min(1e-6)
    img01 = img01.clamp(0, 1) ** u(0.8, 1.25)
    img01 = ((img01 - 0.5) * u(0.85, 1.15) + 0.5 + u(-0.08, 0.08)).clamp(0, 1)
    if u(0, 1) < 0.5:  # marker-like patch in a corner band (outer 20 %)
        ph, pw = int(s * u(0.04, 0.12)), int(s * u(0.04, 0.16))
        top = int(u(0, 0.2 * s - ph)) if u(0, 1) < 0.5 else int(u(0.8 * s, s - ph))
        left = int(u(0, 0.2 * s - pw)) if u(0, 1) < 0.5 else int(u(0.8 * s, s - pw))
        img01 = img01.clone()
        img01[:, top:top + ph, left:left + pw] = u(0, 1)
    return img01 * (out.amax() - lo) + lo
