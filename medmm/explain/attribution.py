"""Attributions for one request: image saliency, note-token scores, modality contributions, sanity checks.

Computing only — drawing lives in ``medmm.explain.render``. Every method goes through Captum's one verb,
``attribute(inputs, target=..., additional_forward_args=...)``.

What is attributed: the finding's **calibrated logit**, ``logit / T`` (T = the checkpoint's temperature for that
finding), not its probability. The sigmoid saturates, so gradients of the probability vanish exactly when the model
is confident and Grad-CAM/IG maps fade for the cases users care about most; the calibrated logit keeps the
gradient signal, ranks pixels exactly like the raw logit (T > 0 is a constant), and is the quantity whose sigmoid
*is* the probability shown in the app, so IG's completeness check reads in the same units as the displayed number.

One modality is explained at a time with the other held fixed: image maps are computed with the notes' embedding
(and any other views' features) as constants, token scores with the image features as constants. How much each
modality matters as a whole is measured separately by removing it (``modality`` in the result).

Thread safety: the pipeline's model is shared by concurrent requests, so nothing here registers hooks on it or
changes it. Captum's layer hooks go on per-call modules (an identity "tap" after the image encoder's last conv
stage, and a per-call view of the text encoder's token-embedding layer that uses the same weights); the
randomisation check works on a deep copy.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medmm.explain.methods import METHOD_NAMES, METHODS, NOTES_METHODS  # the one registry of methods

from medmm.pipeline import InputError

if TYPE_CHECKING:
    from medmm.pipeline import ModelInputs, Pipeline
    from medmm.prediction import Prediction

log = logging.getLogger(__name__)

TARGET = "calibrated_logit"  # logit / temperature of the explained finding; see the module docstring


class ExplainError(InputError):
    """A request that cannot be explained (unknown finding or method, bad view index); message is user-facing.

    A subclass of ``pipeline.InputError`` (itself a ``ValueError``) so the CLI maps it to exit code 2 and the app
    shows it like any other input problem.
    """


@dataclass
class Explanation:
    """Attributions for one finding of one request (numpy only; render with ``medmm.explain.render``)."""

    finding: str
    probability: float                     # calibrated probability of ``finding`` (as in the Prediction)
    method: str                            # "gradcam" | "ig" | "occlusion"
    target: str = TARGET
    view: int | None = None                # index of the explained scan in ``inputs.scans``; None without scans
    heatmap: np.ndarray | None = None      # [S, S] in [0, 1] on the model-input grid: positive evidence, for display
    heatmap_scan: np.ndarray | None = None  # [H, W] = heatmap resized to the explained scan's own shape/aspect
    attributions: np.ndarray | None = None  # [S, S] signed raw map in calibrated-logit units (channels combined)
    tokens: list[tuple[str, float]] = field(default_factory=list)  # (word, score in [-1, 1]) in notes order
    modality: dict[str, Any] = field(default_factory=dict)
    sanity: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # caveats worth showing next to the picture

    def to_summary(self) -> dict[str, Any]:
        """JSON-friendly summary without the arrays (NaN becomes null)."""
        return _json_safe({
            "finding": self.finding, "probability": self.probability, "method": self.method,
            "method_name": METHOD_NAMES[self.method], "target": self.target, "view": self.view,
            "heatmap_shape": None if self.heatmap is None else list(self.heatmap.shape),
            "heatmap_scan_shape": None if self.heatmap_scan is None else list(self.heatmap_scan.shape),
            "tokens": [[w, s] for w, s in self.tokens], "modality": self.modality, "sanity": self.sanity,
            "timings_s": self.timings_s, "notes": self.notes,
        })


# ============================================================================================= forward wrappers
class _ImageScorer:
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


# ============================================================================================= public API
def explain(pipeline: "Pipeline", inputs: "ModelInputs", prediction: "Prediction | None" = None,
            finding: str | None = None, method: str = "gradcam", sanity: bool = False, *,
            view: int = 0, baseline: str = "blur", n_steps: int = 16, notes_method: str = "evidence",
            internal_batch_size: int = 16, occlusion_window: int | None = None,
            occlusion_stride: int | None = None, randomize_stages: int | None = None, faithfulness_steps: int = 10,
            seed: int = 0) -> Explanation:
    """Explain ``finding`` (default: the most probable) for a prepared request.

    ``method`` picks the image attribution (``gradcam`` | ``ig`` | ``occlusion``) of the **image model's own
    answer** (the notes do not enter the image model; they update its answer afterwards by Bayes' rule, see
    ``medmm.notes``). Note words: ``notes_method="evidence"`` (the only one): each concept's effect on the
    finding's log-odds through its published likelihood ratio (``evidence_tokens``). Modality contributions are
    always computed.
    ``sanity=True`` adds the cascading model-parameter randomisation check and deletion/insertion faithfulness
    (seconds on CPU; on request only).
    Occlusion (and the faithfulness curves) run their forward-only perturbations through the pipeline's
    ONNX runtime when it has one (``pipeline.runtime``), batched ``internal_batch_size`` at a time.
    ``baseline`` (``blur`` | ``black``) is the reference image for IG, the occlusion fill and deletion.
    ``view`` picks which scan to map when a request has several (the others stay in the model's input, fixed).
    ``n_steps``: IG steps for the image (16: under a second on 2 cores; the completeness error is reported and a
    note is added above 10 %).
    """
    t_total = time.perf_counter()
    if method not in METHODS:
        raise ExplainError(f"Unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}.")
    if baseline not in ("blur", "black"):
        raise ExplainError(f"Unknown baseline {baseline!r}; choose 'blur' or 'black'.")
    if notes_method not in NOTES_METHODS:
        raise ExplainError(f"Unknown notes method {notes_method!r}; choose one of: {', '.join(NOTES_METHODS)}.")
    if prediction is None:
        prediction = pipeline.predict_prepared(inputs)
    finding = _resolve_finding(pipeline, prediction, finding)
    index = pipeline.findings.index(finding)
    exp = Explanation(finding=finding, probability=float(prediction.findings[finding]), method=method)

    with torch.inference_mode(False), torch.enable_grad():  # callers may sit inside inference_mode
        with torch.no_grad():
            _, views_feat = _image_features(pipeline, inputs)
        if inputs.pixels is not None:
            _explain_image(exp, pipeline, inputs, views_feat, index, view=view, baseline=baseline,
                           n_steps=n_steps, internal_batch_size=internal_batch_size, window=occlusion_window,
                           stride=occlusion_stride, sanity=sanity, randomize_stages=randomize_stages,
                           faithfulness_steps=faithfulness_steps, seed=seed)
            if prediction.image_findings is not None and inputs.notes:
                exp.notes.append(f"The map explains the image model's own answer ({finding} "
                                 f"{prediction.image_findings[finding]:.2f} on the image alone); the notes' evidence "
                                 f"then moved it to {exp.probability:.2f}.")

    if inputs.notes:
        t = time.perf_counter()
        exp.tokens, exp.sanity["notes_evidence"] = evidence_tokens(inputs.notes, prediction, finding)
        exp.timings_s["tokens_s"] = time.perf_counter() - t

    t = time.perf_counter()
    exp.modality = modality_contribution(pipeline, prediction, finding)
    exp.timings_s["modality_s"] = time.perf_counter() - t
    exp.timings_s["total_s"] = time.perf_counter() - t_total
    log.debug("explained %s with %s in %.3f s", finding, method, exp.timings_s["total_s"])
    return exp


def _explain_image(exp: Explanation, pipeline: "Pipeline", inputs: "ModelInputs", views_feat: torch.Tensor,
                   index: int, *, view: int, baseline: str, n_steps: int,
                   internal_batch_size: int, window: int | None, stride: int | None, sanity: bool,
                   randomize_stages: int | None, faithfulness_steps: int, seed: int) -> None:
    """The image half of :func:`explain`: the map of scan ``view`` (the other scans held fixed), its notes, and
    with ``sanity`` the randomisation and faithfulness checks; written into ``exp``."""
    method, finding = exp.method, exp.finding
    model = pipeline.model
    temperatures = pipeline.temperatures.to(pipeline.device)
    t = time.perf_counter()
    n_views = inputs.pixels.shape[1]
    if not 0 <= view < n_views:
        raise ExplainError(f"View {view} does not exist; this request has {n_views} scan(s).")
    exp.view = view
    if n_views > 1:
        exp.notes.append(f"The map shows scan {view + 1} of {n_views}; the other scans stay in the model's "
                         "input unchanged.")
    others = None if n_views == 1 else (views_feat.sum(1) - views_feat[:, view])  # [1, F]
    x = inputs.pixels[:, view]  # [1, 3, S, S]
    prep = pipeline.meta.preprocessing
    # Grad-CAM needs no reference image (IG, occlusion and the sanity checks do): the blur is not paid for it
    ref = None if method == "gradcam" and not sanity else \
        reference_image(x, baseline, black=[-m / sd for m, sd in zip(prep.mean, prep.std)])
    scorer = _ImageScorer(model, temperatures, n_views, encode=pipeline.forward_only_encoder())
    raw, extra = image_attribution(scorer, method, x, ref, index, None, others, n_steps=n_steps,
                                   internal_batch_size=internal_batch_size, window=window, stride=stride)
    exp.attributions = raw
    exp.heatmap = display_heatmap(raw, method)
    exp.heatmap_scan = resize_map(exp.heatmap, inputs.scans[view].pixels.shape)
    exp.sanity.update(extra)
    err = extra.get("ig_completeness", {}).get("relative_error", 0.0)
    if err > 0.1:
        exp.notes.append(f"Integrated Gradients did not converge well (completeness error {err:.0%}); "
                         "more steps (n_steps) give a more reliable map.")
    if not exp.heatmap.any():
        exp.notes.append(f"{METHOD_NAMES[method]} found no positive evidence for {finding} in this scan.")
    exp.timings_s["image_s"] = time.perf_counter() - t

    if sanity:
        t = time.perf_counter()
        kw = dict(n_steps=n_steps, internal_batch_size=internal_batch_size, window=window, stride=stride)
        exp.sanity["randomization"] = randomization_check(
            model, temperatures, method, x, ref, index, None, others, n_views, raw,
            stages=randomize_stages, seed=seed, **kw)
        exp.sanity["faithfulness"] = faithfulness(scorer, x, ref, raw, index, None, others,
                                                  steps=faithfulness_steps, seed=seed)
        exp.timings_s["sanity_s"] = time.perf_counter() - t


def _resolve_finding(pipeline: "Pipeline", prediction: "Prediction", finding: str | None) -> str:
    if finding is None:
        return max(pipeline.findings, key=lambda f: prediction.findings[f])
    if finding in pipeline.findings:
        return finding
    by_case = {f.lower(): f for f in pipeline.findings}
    if finding.strip().lower() in by_case:
        return by_case[finding.strip().lower()]
    raise ExplainError(f"Unknown finding {finding!r}; this model predicts: {', '.join(pipeline.findings)}.")


def _image_features(pipeline: "Pipeline", inputs: "ModelInputs") -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Pooled image features ``[1, F]`` and per-view features ``[1, V, F]``, as the pipeline computed them for the
    prediction (``Pipeline.view_features``: encoded once per request), as plain tensors for autograd code."""
    views = pipeline.view_features(inputs)
    if views is None:
        return None, None
    from medmm.models.model import pool_views

    views = views.clone()  # the prediction's copy may be an inference tensor
    return pool_views(views), views


# ============================================================================================= image maps
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


def occlusion_geometry(size: int, window: int | None = None, stride: int | None = None) -> tuple[int, int]:
    """Window and stride: 32 px / 24 px at 224 (9 x 9 = 81 occlusions, windows still overlap by a quarter),
    scaled with the input size. A 16 px stride (13 x 13 = 169) took 1.6-1.9 s on the loaded 2-core box against
    0.7-0.8 s for 24 px (docs/bench.md); pass ``stride`` for the finer map."""
    return window or max(4, round(size / 7)), stride or max(2, round(size * 3 / 28))


def image_attribution(scorer: _ImageScorer, method: str, x: torch.Tensor, ref: torch.Tensor | None, index: int,
                      text_feat: torch.Tensor | None, other_views: torch.Tensor | None, *, n_steps: int = 32,
                      internal_batch_size: int = 16, window: int | None = None,
                      stride: int | None = None, completeness: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Signed attribution map ``[S, S]`` for one view ``x`` ``[1, 3, S, S]`` and extra facts (IG completeness,
    which costs Captum's convergence delta and two more forward passes; ``completeness=False`` skips it).

    Channels are combined by sum for IG (additive, so completeness holds) and by mean for occlusion (every window
    covers all three replicated channels, so the three values are equal). Grad-CAM is returned before its ReLU.
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion

    size = x.shape[-1]
    args = (text_feat, other_views)
    extra: dict[str, Any] = {}
    if method == "gradcam":
        cam = LayerGradCam(scorer, scorer.tap).attribute(x, target=index, additional_forward_args=args,
                                                         relu_attributions=False)  # [1, 1, h, w]
        raw = LayerAttribution.interpolate(cam.detach(), (size, size), interpolate_mode="bilinear")[0, 0]
    elif method == "ig":
        ig = IntegratedGradients(scorer).attribute(
            x, baselines=ref, target=index, additional_forward_args=args, n_steps=max(n_steps, 1),
            internal_batch_size=internal_batch_size, return_convergence_delta=completeness)
        attr = ig[0] if completeness else ig
        raw = attr.detach()[0].sum(0)
        if completeness:
            with torch.no_grad():
                f_x, f_ref = (float(scorer(t, *args)[0, index]) for t in (x, ref))
            extra["ig_completeness"] = _completeness(float(attr.sum()), f_x, f_ref, float(ig[1].reshape(-1)[0]))
    elif method == "occlusion":
        w, s = occlusion_geometry(size, window, stride)
        attr = Occlusion(scorer).attribute(x, sliding_window_shapes=(x.shape[1], w, w), strides=(x.shape[1], s, s),
                                           baselines=ref, target=index, additional_forward_args=args,
                                           perturbations_per_eval=internal_batch_size)
        raw = attr.detach()[0].mean(0)
        extra["occlusion"] = {"window_px": w, "stride_px": s}
    else:  # pragma: no cover - explain() validates first
        raise ExplainError(f"Unknown explanation method {method!r}.")
    return raw.float().cpu().numpy(), extra


def _completeness(attr_sum: float, f_x: float, f_ref: float, delta: float) -> dict[str, float]:
    """IG completeness: sum of attributions vs f(x) - f(baseline), with Captum's convergence delta."""
    diff = f_x - f_ref
    return {"sum_attributions": attr_sum, "f_input": f_x, "f_baseline": f_ref, "delta": delta,
            "relative_error": abs(delta) / max(abs(diff), 1e-6)}


def display_heatmap(raw: np.ndarray, method: str) -> np.ndarray:
    """Positive evidence scaled to [0, 1]: ReLU, then divide by a robust maximum.

    IG is per pixel and speckled, so it is lightly smoothed (sigma 1 % of the side) and scaled by its 99.5th
    percentile; Grad-CAM and occlusion are already smooth and are scaled by their maximum.
    """
    pos = np.maximum(raw, 0).astype(np.float32)
    if method == "ig":
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


# ============================================================================================= notes
def evidence_tokens(notes: str | None, prediction: "Prediction", finding: str) -> tuple[list[tuple[str, float]],
                                                                                   dict[str, Any]]:
    """Note words scored by what the notes' evidence did to ``finding`` (``medmm.notes``): the words of a concept
    and of the cue that set its assertion ("no", "denies") get that concept's effect on the finding's log-odds
    (leave-one-out over the evidence, exact for a lone concept), scaled so the largest is +-1; other words get NaN
    (shown unscored). Red raises the finding, blue lowers it, for every finding and every population.

    Returns (words in notes order, {"method": "evidence", "effects": [{concept, text, effect}], ...})."""
    import re

    from medmm.notes.evidence import item_effects

    ev, prior = prediction.notes_evidence, prediction.prior_states
    if not notes or ev is None:
        return [], {"method": "evidence", "effects": []}
    effects = [(e, x) for e, x in item_effects(prior, ev, finding) if e.used]
    spans: list[tuple[int, int, float]] = []
    for e, x in effects:
        spans.append((e.start, e.end, x))
        if e.cue is not None:
            spans.append((e.cue[0], e.cue[1], x))
    words = [(m.group(0), m.start(), m.end()) for m in re.finditer(r"[^\W_]+(?:[.'’%/+-][^\W_]+)*%?|[^\w\s]", notes)]
    scores = []
    for w, a, b in words:
        hit = [x for s0, s1, x in spans if a < s1 and s0 < b]
        scores.append(max(hit, key=abs) if hit else float("nan"))
    top = max((abs(x) for x in scores if np.isfinite(x)), default=0.0)
    out = [(w, (x / top if top > 0 else 0.0) if np.isfinite(x) else float("nan"))
           for (w, _, _), x in zip(words, scores)]
    summary = {"method": "evidence", "finding": finding,
               "effects": [{"concept": e.concept, "text": e.text, "finding": e.finding, "lr": e.lr,
                            "effect_logodds": round(x, 4)} for e, x in effects]}
    return out, summary


def modality_contribution(pipeline: "Pipeline", prediction: "Prediction", finding: str) -> dict[str, Any]:
    """p(image + notes), p(image only) and p(notes only) for ``finding``, and each modality's share of the change
    when it is removed. The image alone is the image model's own answer; the notes alone are the notes' evidence
    applied to the stated pre-test probability (``medmm.notes.pretest_states``); image + notes is the image's
    answer updated by the same evidence. ``notes_shift_logodds`` is exactly what the notes added to the finding's
    log-odds. Leave-one-out effects, not Shapley values."""
    from medmm.notes import marginals, pretest_states, update_states
    from medmm.notes.evidence import logit

    j = pipeline.findings.index(finding)
    ev = prediction.notes_evidence
    has_img, has_notes = prediction.image_findings is not None, ev is not None
    p_image = prediction.image_findings[finding] if has_img else None
    p_notes = None
    if has_notes:
        states, _ = pretest_states(ev.population)
        p_notes = float(marginals(update_states(states, ev.log_lr))[j])
    out: dict[str, Any] = {
        "finding": finding, "present": [m for m, ok in (("image", has_img), ("notes", has_notes)) if ok],
        "p_both": prediction.findings[finding] if has_img and has_notes else None,
        "p_image_only": p_image, "p_notes_only": p_notes, "delta_image": None, "delta_notes": None,
    }
    if out["p_both"] is not None:
        d_img, d_txt = out["p_both"] - p_notes, out["p_both"] - p_image
        total = abs(d_img) + abs(d_txt)
        out.update(delta_image=d_img, delta_notes=d_txt, notes_shift_logodds=logit(out["p_both"]) - logit(p_image),
                   share_image=abs(d_img) / total if total > 0 else 0.5,
                   share_notes=abs(d_txt) / total if total > 0 else 0.5)
    else:
        out.update(share_image=1.0 if has_img else 0.0, share_notes=1.0 if has_notes else 0.0)
        out["note"] = "Only one modality was given, so it carries the whole prediction."
    return out


# ============================================================================================= sanity checks
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


def randomization_check(model: nn.Module, temperatures: torch.Tensor, method: str, x: torch.Tensor,
                        ref: torch.Tensor, index: int, text_feat: torch.Tensor | None,
                        other_views: torch.Tensor | None, n_views: int, original: np.ndarray, *,
                        stages: int | None = None, seed: int = 0, **attr_kwargs: Any) -> dict[str, Any]:
    """Cascading model-parameter randomisation on a deep copy; Spearman (signed and |.|) vs the original per stage.

    A map that barely changes when the weights it explains are destroyed is explaining the input, not the model.
    ``other_views`` keeps the original features (their share of the pooled vector is a constant here).
    ``stages`` (default: all for Grad-CAM, the first 4 for IG/occlusion, which cost seconds each) limits the cascade.
    """
    twin = copy.deepcopy(model, memo={id(model.text_encoder): model.text_encoder})  # text path is not explained
    twin.eval()
    all_stages = cascade_stages(twin)
    n = len(all_stages) if stages is None and method == "gradcam" else (stages or 4)
    generator = torch.Generator().manual_seed(seed)
    scorer = _ImageScorer(twin, temperatures, n_views)
    rows = []
    for name, modules in all_stages[:n]:
        _randomize_(modules, generator)
        raw, _ = image_attribution(scorer, method, x, ref, index, text_feat, other_views, **attr_kwargs)
        rows.append({"stage": name, "spearman": spearman(original, raw),
                     "spearman_abs": spearman(np.abs(original), np.abs(raw))})
    return {"method": method, "stages": rows, "reference": "Adebayo et al. 2018, cascading randomisation"}


def faithfulness(scorer: _ImageScorer, x: torch.Tensor, ref: torch.Tensor, raw: np.ndarray, index: int,
                 text_feat: torch.Tensor | None, other_views: torch.Tensor | None, *, steps: int = 10,
                 patch: int | None = None, random_orders: int = 2, seed: int = 0) -> dict[str, Any]:
    """Deletion and insertion AUC of the finding's probability, against random patch orders.

    Patches (1/14 of the side: 16 px at 224) are ranked by mean attribution. Deletion replaces the top patches by
    the reference image in ``steps`` steps (lower AUC = more faithful); insertion starts from the reference and
    restores them (higher = more faithful). ``*_gain`` is the method's advantage over random order (> 0 is good).
    """
    size = x.shape[-1]
    patch = patch or max(2, round(size / 14))
    g = math.ceil(size / patch)
    score = F.avg_pool2d(torch.from_numpy(raw)[None, None].float(), patch, ceil_mode=True)[0, 0].flatten().numpy()
    n_patches = score.size
    ks = np.unique(np.linspace(0, n_patches, steps + 1).round().astype(int))
    frac = ks / n_patches
    rng = np.random.default_rng(seed)
    orders = [np.argsort(-score, kind="stable")] + [rng.permutation(n_patches) for _ in range(random_orders)]

    # every curve's images in one batched pass; the two end points (nothing / everything replaced) are the same for
    # every order, so they are computed once
    inner = ks[(ks > 0) & (ks < n_patches)]
    masks = torch.zeros(len(orders), len(inner), n_patches, dtype=x.dtype)
    for i, order in enumerate(orders):
        for j, k in enumerate(inner):
            masks[i, j, torch.from_numpy(order[:k].copy())] = 1
    m = masks.view(-1, 1, g, g).repeat_interleave(patch, -1).repeat_interleave(patch, -2)[..., :size, :size]
    m = m.to(x.device)
    imgs = torch.cat([x, ref, x * (1 - m) + ref * m, ref * (1 - m) + x * m])  # deletion, then insertion
    p = scorer.probability(imgs, index, text_feat, other_views, batch_size=32)
    p_x, p_ref = p[0], p[1]
    per = p[2:].reshape(2, len(orders), len(inner))
    ends = {True: (p_x, p_ref), False: (p_ref, p_x)}  # (k = 0, k = all) for deletion / insertion

    out: dict[str, Any] = {"patch_px": patch, "steps": int(len(ks) - 1), "fraction": frac.round(4).tolist(),
                           "random_orders": random_orders}
    for c, (name, deletion) in enumerate((("deletion", True), ("insertion", False))):
        first, last = ends[deletion]
        curves = [np.concatenate([[first], per[c, i], [last]]) for i in range(len(orders))]
        auc = [_trapezoid(cv, frac) for cv in curves]
        random_auc = float(np.mean(auc[1:])) if len(auc) > 1 else math.nan
        out[f"{name}_auc"] = auc[0]
        out[f"{name}_auc_random"] = random_auc
        out[f"{name}_gain"] = (random_auc - auc[0]) if deletion else (auc[0] - random_auc)
        out[f"{name}_curve"] = [round(float(v), 5) for v in curves[0]]
    return out


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


# ============================================================================================= CLI
def cli_explain(pipeline: "Pipeline", images: Sequence[str | Path], notes: str | None, finding: str | None = None,
                method: str = "gradcam", out_dir: str | Path = "explain_out", **explain_kwargs: Any) -> int:
    """``python -m medmm explain``: writes overlay.png, attributions.npy, tokens.json, summary.json into ``out_dir``.

    The randomisation and faithfulness checks run only with ``sanity=True`` in ``explain_kwargs`` (CLI
    ``--sanity``: they take seconds); ``explain_kwargs`` go to ``explain``. Bad input raises ScanError / InputError / ExplainError (exit code 2 in the CLI).
    overlay.png and attributions.npy are written only when a scan was given.
    """
    from medmm.explain.render import overlay_png

    inputs = pipeline.prepare([Path(p) for p in images], notes)
    prediction = pipeline.predict_prepared(inputs)
    exp = explain(pipeline, inputs, prediction, finding=finding, method=method, **explain_kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if exp.heatmap_scan is not None:
        title = f"{exp.finding}: p = {exp.probability:.2f}"
        (out / "overlay.png").write_bytes(overlay_png(inputs.scans[exp.view].pixels, exp.heatmap_scan, title,
                                                      caption=f"{METHOD_NAMES[exp.method]} on the calibrated logit; "
                                                              "not a diagnosis"))
        np.save(out / "attributions.npy", exp.attributions)
        written += ["overlay.png", "attributions.npy"]
    # words inside identifiers of the notes (medmm.report.deid) are written as [REDACTED], never as typed
    from medmm.report.deid import phi_words

    phi = phi_words(inputs.notes or "")
    tokens = [{"word": "[REDACTED]" if w.lower() in phi or sum(c.isdigit() for c in w) >= 5 else w, "score": s}
              for w, s in exp.tokens]
    (out / "tokens.json").write_text(json.dumps(tokens, indent=1) + "\n")
    summary = exp.to_summary()
    summary.pop("tokens")
    summary.update(files=written + ["tokens.json", "summary.json"], warnings=list(prediction.warnings),
                   checkpoint=prediction.checkpoint)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    modality = ", ".join(f"{k[6:]} {v:.0%}" for k, v in exp.modality.items() if k.startswith("share_"))
    print(f"{exp.finding}: p={exp.probability:.3f}; {METHOD_NAMES[exp.method]}; modality share {modality}; "
          f"{exp.timings_s['total_s']:.2f} s -> {out}")
    return 0


def _json_safe(value: Any) -> Any:
    """Numpy scalars to Python, NaN/inf to None, tuples to lists (for json.dumps)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    return value


__all__ = ["METHODS", "NOTES_METHODS", "TARGET", "ExplainError", "Explanation", "cli_explain", "explain", "image_attribution",
           "modality_contribution", "randomization_check", "faithfulness", "spearman", "evidence_tokens",
           "reference_image", "resize_map", "display_heatmap"]

