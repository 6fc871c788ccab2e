"""Image saliency for one scan of a request: the forward function Captum differentiates (:class:`ImageScorer`),
the reference image, the signed map of any registered method (:func:`image_attribution`, a registry look-up) and
its display form.

The map explains the **image model's own answer** (calibrated logits): the notes do not enter the image model, they
update its answer afterwards by Bayes' rule (``medmm.notes``). The other scans of a multi-view request stay in the
model's input as a constant share of the pooled features.

Thread safety: the pipeline's model is shared by concurrent requests, so nothing here registers hooks on it or
changes it; Grad-CAM's layer hook goes on a per-call identity "tap" after the image encoder's last conv stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medmm.explain.explanation import ExplainError
from medmm.explain.methods import BY_KEY, AttributionSettings

if TYPE_CHECKING:
    from medmm.pipeline import ModelInputs, Pipeline


class ImageScorer:
    """Calibrated logits ``[N, K]`` from one view's pixels ``[N, 3, S, S]``; notes and other views held fixed.

    ``tap`` is a per-call identity module on the last conv stage's output (after ``conv_head``/``bn2`` for
    EfficientNet) — the layer Grad-CAM reads — so hooks never touch the shared model.
    """

    def __init__(self, model: nn.Module, temperatures: torch.Tensor, n_views: int,
                 encode: Any | None = None) -> None:
        self.model, self.temperatures, self.n_views = model, temperatures, n_views
        self.tap = nn.Identity()
        # forward-only image encoder (medmm.runtime, e.g. ONNX Runtime): used when no gradient is needed
        # (occlusion, deletion/insertion curves); the same features to ~1e-5, several times faster on a CPU
        self.encode = encode

    def __call__(self, pixels: torch.Tensor, text_feat: torch.Tensor | None = None,
                 other_views: torch.Tensor | None = None) -> torch.Tensor:
        if self.encode is not None and not torch.is_grad_enabled():
            feat = self.encode(pixels)
        else:
            x = pixels.contiguous(memory_format=torch.channels_last)  # as MedMM.encode_images (NHWC convs on CPU)
            feat = self.model.image_encoder.forward_with_tap(x, self.tap)  # [N, F]
        n = feat.shape[0]
        if other_views is not None:  # the pipeline averages view features; the others enter as a constant sum
            feat = (feat + _rows(other_views, n)) / self.n_views
        txt = None if text_feat is None else _rows(text_feat, n)
        return self.model.forward_features(feat, txt) / self.temperatures

    def probability(self, pixels: torch.Tensor, index: int, text_feat: torch.Tensor | None,
                    other_views: torch.Tensor | None, batch_size: int = 16) -> np.ndarray:
        """Calibrated probability of finding ``index`` for a batch of images, evaluated in chunks."""
        out = []
        with torch.no_grad():
            for i in range(0, pixels.shape[0], batch_size):
                out.append(torch.sigmoid(self(pixels[i:i + batch_size], text_feat, other_views)[:, index]))
        return torch.cat(out).float().cpu().numpy()


def _rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """Broadcast a one-row constant to ``n`` rows (Captum may already have repeated it)."""
    return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 and n != 1 else t


@dataclass
class ViewInputs:
    """One scan of a request, ready to attribute: its pixels, the other scans' features (held fixed) and the
    forward function over it."""

    x: torch.Tensor                  # [1, 3, S, S] model-input pixels of the explained scan
    others: torch.Tensor | None      # [1, F] sum of the other scans' features; None for a single scan
    n_views: int
    scorer: ImageScorer


def view_inputs(pipeline: "Pipeline", inputs: "ModelInputs", view: int) -> ViewInputs:
    """Scan ``view`` of a request with pixels, the others as constants, from the features the pipeline computed for
    the prediction (``Pipeline.view_features``: encoded once per request). Call with autograd allowed
    (``torch.inference_mode(False)``)."""
    with torch.no_grad():
        views_feat = pipeline.view_features(inputs).clone()  # [1, V, F]; the prediction's may be an inference tensor
    n_views = inputs.pixels.shape[1]
    if not 0 <= view < n_views:
        raise ExplainError(f"View {view} does not exist; this request has {n_views} scan(s).")
    others = None if n_views == 1 else (views_feat.sum(1) - views_feat[:, view])  # [1, F]
    scorer = ImageScorer(pipeline.model, pipeline.temperatures.to(pipeline.device), n_views,
                         encode=pipeline.forward_only_encoder())
    return ViewInputs(x=inputs.pixels[:, view], others=others, n_views=n_views, scorer=scorer)


def pipeline_reference(pipeline: "Pipeline", x: torch.Tensor, kind: str = "blur") -> torch.Tensor:
    """:func:`reference_image` of ``x`` with the pipeline's black level (intensity 0 after its normalisation)."""
    prep = pipeline.meta.preprocessing
    return reference_image(x, kind, black=[-m / sd for m, sd in zip(prep.mean, prep.std)])


def reference_image(x: torch.Tensor, kind: str = "blur", black: float | Sequence[float] | None = None) -> torch.Tensor:
    """The "no information" reference for IG, occlusion fill and deletion, in normalised input space.

    ``blur`` (default): Gaussian blur with sigma = 5 % of the side (11 px at 224). It removes the texture and edges
    that carry findings (opacities, consolidation borders) while keeping the overall brightness layout of a chest
    film. A black reference would give zero attribution to every dark pixel (x - x' = 0), and the lung fields, where
    pneumonia shows, are the darkest part of a radiograph. ``black``: every pixel at intensity 0, i.e. the
    normalised value ``black`` (per channel: ``-mean / std``; default: the image's own minimum).
    """
    if kind == "black":
        if black is None:
            return torch.full_like(x, float(x.amin()))
        value = torch.as_tensor(black, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        return torch.zeros_like(x) + value
    return gaussian_blur(x, sigma=0.05 * x.shape[-1])


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, C, H, W]`` with reflect padding."""
    radius = max(1, min(int(3 * sigma), x.shape[-1] // 2 - 1, x.shape[-2] // 2 - 1))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def image_attribution(scorer: ImageScorer, method: str, x: torch.Tensor, ref: torch.Tensor | None, index: int,
                      text_feat: torch.Tensor | None, other_views: torch.Tensor | None,
                      settings: AttributionSettings = AttributionSettings()) -> tuple[np.ndarray, dict[str, Any]]:
    """Signed attribution map ``[S, S]`` of finding ``index`` for one view ``x`` ``[1, 3, S, S]``, and extra facts
    (IG completeness, occlusion geometry): the registry entry's own ``attribute`` (``medmm.explain.methods``)."""
    entry = BY_KEY.get(method)
    if entry is None:  # pragma: no cover - explain() validates first
        raise ExplainError(f"Unknown explanation method {method!r}.")
    raw, extra = entry.attribute(scorer, x, ref, index, (text_feat, other_views), settings)
    return raw.float().cpu().numpy(), extra


def display_heatmap(raw: np.ndarray, method: str) -> np.ndarray:
    """Positive evidence scaled to [0, 1]: ReLU, then divide by a robust maximum.

    Per-pixel maps (IG) are speckled, so they are lightly smoothed (sigma 1 % of the side) and scaled by their
    99.5th percentile; Grad-CAM and occlusion are already smooth and are scaled by their maximum.
    """
    pos = np.maximum(raw, 0).astype(np.float32)
    if BY_KEY[method].per_pixel:
        t = torch.from_numpy(pos)[None, None]
        pos = gaussian_blur(t, sigma=max(0.01 * pos.shape[-1], 0.5))[0, 0].numpy()
        top = float(np.percentile(pos, 99.5))
    else:
        top = float(pos.max())
    if not np.isfinite(top) or top <= 0:
        return np.zeros_like(pos)
    return np.clip(pos / top, 0.0, 1.0).astype(np.float32)


def resize_map(heatmap: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize a model-grid map back to a scan's ``(H, W)``; the exact inverse of the pipeline's squash resize."""
    h, w = int(shape[0]), int(shape[1])
    t = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))[None, None]
    if t.shape[-2:] != (h, w):
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False,
                          antialias=h < t.shape[-2] or w < t.shape[-1])
    return t[0, 0].clamp(0, 1).numpy()


__all__ = ["ImageScorer", "ViewInputs", "display_heatmap", "gaussian_blur", "image_attribution",
           "pipeline_reference", "reference_image", "resize_map", "view_inputs"]
