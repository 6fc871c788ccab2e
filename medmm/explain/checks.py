"""Sanity checks of an image map: does it depend on the model (cascading parameter randomisation), and does it
point at what the model uses (deletion / insertion faithfulness)? Plus the rank correlation both rely on.

The randomisation check works on a deep copy of the model: the pipeline's model is shared by concurrent requests.
``medmm.explain.saliency_check`` turns a cheap version of these numbers into the per-request verdict.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medmm.explain.image import ImageScorer, ViewInputs, image_attribution
from medmm.explain.methods import BY_KEY, AttributionSettings


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (average ranks for ties); NaN when either map is constant."""
    ra, rb = _rank(np.ravel(a)), _rank(np.ravel(b))
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _rank(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse]


def cascade_stages(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """Stages to randomise from the output down (Adebayo et al. 2018): head, fusion, then the image encoder."""
    stages: list[tuple[str, list[nn.Module]]] = [
        ("head", [model.head]), ("fusion+projections", [model.fusion, model.image_proj, model.text_proj])]
    # the backbone adapter's stages, from the top: e.g. conv_head, blocks.6 ... blocks.0, stem for EfficientNet
    stages += [(name, [module]) for name, module in reversed(model.image_encoder.stages)]
    return stages


@torch.no_grad()
def _randomize_(modules: list[nn.Module], generator: torch.Generator) -> None:
    """Re-draw every parameter from a Gaussian with the tensor's own mean and std (keeps activation scale sane)."""
    for module in modules:
        for p in module.parameters():
            std = float(p.std()) if p.numel() > 1 else 0.0
            std = std if std > 0 else 0.02
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
            p.copy_(noise * std + float(p.mean()))


def randomization_check(view: ViewInputs, method: str, ref: torch.Tensor | None, index: int, original: np.ndarray,
                        *, stages: int | None = None, seed: int = 0,
                        settings: AttributionSettings = AttributionSettings()) -> dict[str, Any]:
    """Cascading model-parameter randomisation on a deep copy; Spearman (signed and |.|) vs the original per stage.

    A map that barely changes when the weights it explains are destroyed is explaining the input, not the model.
    The other scans (``view.others``) keep their original features (their share of the pooled vector is a
    constant here). ``stages`` limits the cascade (default: the method's ``sanity_stages`` in the registry, all for
    Grad-CAM, the first 4 for IG/occlusion, which cost seconds each).
    """
    model = view.scorer.model
    twin = copy.deepcopy(model, memo={id(model.text_encoder): model.text_encoder})  # text path is not explained
    twin.eval()
    all_stages = cascade_stages(twin)
    if stages is None:
        stages = BY_KEY[method].sanity_stages   # None: the whole cascade
    n = len(all_stages) if stages is None else (stages or 4)
    generator = torch.Generator().manual_seed(seed)
    scorer = ImageScorer(twin, view.scorer.temperatures, view.n_views)  # the torch twin: no forward-only encoder
    rows = []
    for name, modules in all_stages[:n]:
        _randomize_(modules, generator)
        raw, _ = image_attribution(scorer, method, view.x, ref, index, None, view.others, settings)
        rows.append({"stage": name, "spearman": spearman(original, raw),
                     "spearman_abs": spearman(np.abs(original), np.abs(raw))})
    return {"method": method, "stages": rows, "reference": "Adebayo et al. 2018, cascading randomisation"}


def faithfulness(scorer: ImageScorer, x: torch.Tensor, ref: torch.Tensor, raw: np.ndarray, index: int,
                 text_feat: torch.Tensor | None, other_views: torch.Tensor | None, *, steps: int = 10,
                 patch: int | None = None, random_orders: int = 2, seed: int = 0,
                 directions: tuple[str, ...] = ("deletion", "insertion"),
                 ends: tuple[float, float] | None = None) -> dict[str, Any]:
    """Deletion and insertion AUC of the finding's probability, against random patch orders.

    Patches (1/14 of the side: 16 px at 224) are ranked by mean attribution. Deletion replaces the top patches by
    the reference image in ``steps`` steps (lower AUC = more faithful); insertion starts from the reference and
    restores them (higher = more faithful). ``*_gain`` is the method's advantage over random order (> 0 is good).

    ``directions``: the curves to compute (both by default, in one batched pass). ``ends``: the probabilities of
    ``x`` and ``ref`` from an earlier call on the same inputs (returned as ``"ends"``), so that a second call for the
    other direction does not encode them again; the same patch orders either way (``seed``).
    """
    size = x.shape[-1]
    patch = patch or max(2, round(size / 14))
    score = F.avg_pool2d(torch.from_numpy(raw)[None, None].float(), patch, ceil_mode=True)[0, 0].flatten().numpy()
    n_patches = score.size
    ks = np.unique(np.linspace(0, n_patches, steps + 1).round().astype(int))
    frac = ks / n_patches
    rng = np.random.default_rng(seed)
    orders = [np.argsort(-score, kind="stable")] + [rng.permutation(n_patches) for _ in range(random_orders)]

    # every curve's images in one batched pass; the two end points (nothing / everything replaced) are the same for
    # every order, so they are computed once
    inner = ks[(ks > 0) & (ks < n_patches)]
    m = _patch_masks(orders, inner, n_patches, patch, size, x.dtype).to(x.device)
    mixed = {"deletion": lambda: x * (1 - m) + ref * m, "insertion": lambda: ref * (1 - m) + x * m}
    imgs = torch.cat(([] if ends is not None else [x, ref]) + [mixed[d]() for d in directions])
    p = scorer.probability(imgs, index, text_feat, other_views, batch_size=32)
    p_x, p_ref = ends if ends is not None else (p[0], p[1])
    per = p[0 if ends is not None else 2:].reshape(len(directions), len(orders), len(inner))
    ends_by = {True: (p_x, p_ref), False: (p_ref, p_x)}  # (k = 0, k = all) for deletion / insertion

    out: dict[str, Any] = {"patch_px": patch, "steps": int(len(ks) - 1), "fraction": frac.round(4).tolist(),
                           "random_orders": random_orders, "ends": (float(p_x), float(p_ref))}
    for c, name in enumerate(directions):
        deletion = name == "deletion"
        first, last = ends_by[deletion]
        curves = [np.concatenate([[first], per[c, i], [last]]) for i in range(len(orders))]
        auc = [_trapezoid(cv, frac) for cv in curves]
        random_auc = float(np.mean(auc[1:])) if len(auc) > 1 else math.nan
        out[f"{name}_auc"] = auc[0]
        out[f"{name}_auc_random"] = random_auc
        out[f"{name}_gain"] = (random_auc - auc[0]) if deletion else (auc[0] - random_auc)
        out[f"{name}_curve"] = [round(float(v), 5) for v in curves[0]]
    return out


def _patch_masks(orders: list[np.ndarray], inner: np.ndarray, n_patches: int, patch: int, size: int,
                 dtype: torch.dtype) -> torch.Tensor:
    """``[orders x steps, 1, size, size]`` masks: 1 on the first ``k`` patches of each order, for each ``k``."""
    g = math.ceil(size / patch)
    masks = torch.zeros(len(orders), len(inner), n_patches, dtype=dtype)
    for i, order in enumerate(orders):
        for j, k in enumerate(inner):
            masks[i, j, torch.from_numpy(order[:k].copy())] = 1
    return masks.view(-1, 1, g, g).repeat_interleave(patch, -1).repeat_interleave(patch, -2)[..., :size, :size]


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


__all__ = ["cascade_stages", "faithfulness", "randomization_check", "spearman"]
