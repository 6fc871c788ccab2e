"""The one registry of explanation methods. Each entry carries its own ``attribute`` function, Captum's one verb,
so running a method is a look-up: ``BY_KEY[key].attribute(scorer, x, ...)``.

The CLI choices, the app's radio buttons, the benchmark, the saliency check's second method and the table in
docs/explain.md are all derived from :data:`REGISTRY` (tests check each). This module stays torch-free at import:
the CLI builds its choices from it before loading anything, so each ``attribute`` imports torch and Captum when it
runs.

Adding a method: an ``attribute`` function and an entry here; nothing else branches on the method's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

    from medmm.explain.image import ImageScorer


@dataclass(frozen=True)
class AttributionSettings:
    """How much work a method does; each method reads the fields it needs."""

    n_steps: int = 32                       # IG steps along the path from the reference image
    internal_batch_size: int = 16           # IG path points / occluded images per forward pass
    occlusion_window: int | None = None     # px; None: :func:`occlusion_geometry`
    occlusion_stride: int | None = None     # px; None: :func:`occlusion_geometry`
    completeness: bool = True               # IG: report the completeness check (Captum's delta, two more forwards)


# attribute(scorer, x [1, 3, S, S], baselines [1, 3, S, S] | None, target, additional_forward_args, settings)
#   -> (signed map [S, S] as a tensor, extra facts for Explanation.sanity)
Attribute = Callable[["ImageScorer", "torch.Tensor", "torch.Tensor | None", int, tuple, AttributionSettings],
                     "tuple[torch.Tensor, dict[str, Any]]"]


def occlusion_geometry(size: int, window: int | None = None, stride: int | None = None) -> tuple[int, int]:
    """Window and stride: 32 px / 24 px at 224 (9 x 9 = 81 occlusions, windows still overlap by a quarter),
    scaled with the input size. A 16 px stride (13 x 13 = 169) took 1.6-1.9 s on the loaded 2-core box against
    0.7-0.8 s for 24 px (docs/bench.md); pass ``stride`` for the finer map."""
    return window or max(4, round(size / 7)), stride or max(2, round(size * 3 / 28))


def attribute_gradcam(scorer: "ImageScorer", x: "torch.Tensor", baselines: "torch.Tensor | None", target: int,
                      additional_forward_args: tuple,
                      settings: AttributionSettings) -> "tuple[torch.Tensor, dict[str, Any]]":
    """``LayerGradCam`` on the scorer's tap (the last conv stage), upsampled to the input grid; before its ReLU."""
    from captum.attr import LayerAttribution, LayerGradCam

    size = x.shape[-1]
    cam = LayerGradCam(scorer, scorer.tap).attribute(x, target=target, additional_forward_args=additional_forward_args,
                                                     relu_attributions=False)  # [1, 1, h, w]
    return LayerAttribution.interpolate(cam.detach(), (size, size), interpolate_mode="bilinear")[0, 0], {}


def attribute_ig(scorer: "ImageScorer", x: "torch.Tensor", baselines: "torch.Tensor | None", target: int,
                 additional_forward_args: tuple, settings: AttributionSettings) -> "tuple[torch.Tensor, dict[str, Any]]":
    """``IntegratedGradients`` from the reference image; channels summed (additive, so completeness holds).
    ``settings.completeness`` adds the completeness check (Captum's convergence delta and two more forward passes)."""
    import torch
    from captum.attr import IntegratedGradients

    completeness = settings.completeness
    ig = IntegratedGradients(scorer).attribute(
        x, baselines=baselines, target=target, additional_forward_args=additional_forward_args,
        n_steps=max(settings.n_steps, 1), internal_batch_size=settings.internal_batch_size,
        return_convergence_delta=completeness)
    attr = ig[0] if completeness else ig
    extra: dict[str, Any] = {}
    if completeness:
        with torch.no_grad():
            f_x, f_ref = (float(scorer(t, *additional_forward_args)[0, target]) for t in (x, baselines))
        extra["ig_completeness"] = _completeness(float(attr.sum()), f_x, f_ref, float(ig[1].reshape(-1)[0]))
    return attr.detach()[0].sum(0), extra


def _completeness(attr_sum: float, f_x: float, f_ref: float, delta: float) -> dict[str, float]:
    """IG completeness: sum of attributions vs f(x) - f(baseline), with Captum's convergence delta."""
    diff = f_x - f_ref
    return {"sum_attributions": attr_sum, "f_input": f_x, "f_baseline": f_ref, "delta": delta,
            "relative_error": abs(delta) / max(abs(diff), 1e-6)}


def attribute_occlusion(scorer: "ImageScorer", x: "torch.Tensor", baselines: "torch.Tensor | None", target: int,
                        additional_forward_args: tuple,
                        settings: AttributionSettings) -> "tuple[torch.Tensor, dict[str, Any]]":
    """``Occlusion`` with windows filled from the reference image; channel mean (every window covers all three
    replicated channels, so the three values are equal). Forward-only: runs through the scorer's fast encoder."""
    from captum.attr import Occlusion

    w, s = occlusion_geometry(x.shape[-1], settings.occlusion_window, settings.occlusion_stride)
    attr = Occlusion(scorer).attribute(x, sliding_window_shapes=(x.shape[1], w, w), strides=(x.shape[1], s, s),
                                       baselines=baselines, target=target,
                                       additional_forward_args=additional_forward_args,
                                       perturbations_per_eval=settings.internal_batch_size)
    return attr.detach()[0].mean(0), {"occlusion": {"window_px": w, "stride_px": s}}


@dataclass(frozen=True)
class ExplanationMethod:
    key: str              # value of --method / the app's radio / Explanation.method
    name: str             # shown to people
    captum: str           # the Captum class that computes it
    summary: str          # one line for the docs table and --help
    compare_with: str     # the second method the saliency check compares this one's map with
    attribute: Attribute = field(repr=False)  # Captum's one verb for this method (signature: ``Attribute``)
    uses_reference: bool = True   # needs the reference image (Grad-CAM does not: the blur is not paid for it)
    per_pixel: bool = False       # a speckled per-pixel map: smoothed and scaled by a percentile for display
    sanity_stages: int | None = 4  # randomisation-cascade stages by default (None: all; each re-runs the method)


REGISTRY: tuple[ExplanationMethod, ...] = (
    ExplanationMethod("gradcam", "Grad-CAM", "LayerGradCam",
                      "gradient-weighted activations of the last image stage; fastest (one backward pass)", "ig",
                      attribute_gradcam, uses_reference=False, sanity_stages=None),
    ExplanationMethod("ig", "Integrated Gradients", "IntegratedGradients",
                      "path integral of input gradients from a baseline; 16 steps, pixel resolution", "gradcam",
                      attribute_ig, per_pixel=True),
    ExplanationMethod("occlusion", "Occlusion", "Occlusion",
                      "drop in the finding's logit when a 32 px window is masked (81 windows at 224 px); model-agnostic", "gradcam",
                      attribute_occlusion),
)
BY_KEY = {m.key: m for m in REGISTRY}
METHODS: tuple[str, ...] = tuple(BY_KEY)
METHOD_NAMES: dict[str, str] = {m.key: m.name for m in REGISTRY}
DEFAULT_METHOD = METHODS[0]

# note-word attribution (the notes half of every explanation): the notes reach the prediction only as evidence with
# published likelihood ratios (medmm.notes), so a word's score is its concept's effect on the finding's log-odds
NOTES_METHODS: tuple[str, ...] = ("evidence",)
NOTES_METHOD_NAMES: dict[str, str] = {"evidence": "evidence (likelihood ratios)"}


def method_help() -> str:
    """One line per method for ``--help``."""
    return "; ".join(f"{m.key} = {m.name} ({m.summary})" for m in REGISTRY)


def methods_markdown() -> str:
    """The methods table of docs/explain.md (a test keeps the doc equal to this)."""
    rows = ["| method | name | Captum | what it is | saliency check compares with |", "|---|---|---|---|---|"]
    rows += [f"| `{m.key}` | {m.name} | `{m.captum}` | {m.summary} | {BY_KEY[m.compare_with].name} |" for m in REGISTRY]
    return "\n".join(rows)


__all__ = ["Attribute", "AttributionSettings", "BY_KEY", "DEFAULT_METHOD", "ExplanationMethod", "METHODS",
           "METHOD_NAMES", "NOTES_METHODS", "NOTES_METHOD_NAMES", "REGISTRY", "attribute_gradcam", "attribute_ig",
           "attribute_occlusion", "method_help", "methods_markdown", "occlusion_geometry"]
