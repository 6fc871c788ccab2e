"""``explain()``: the attributions of one request for one finding, from its three parts — the image map
(``medmm.explain.image``, any method of the registry in ``medmm.explain.methods``), note-word scores
(``medmm.explain.notes``) and modality contributions (``medmm.explain.modality``) — with the sanity checks
(``medmm.explain.checks``) on request.

Computing only: drawing lives in ``medmm.explain.render``, files in ``medmm.explain.files`` (the CLI's).

What is attributed: the finding's **calibrated logit**, ``logit / T`` (T = the checkpoint's temperature for that
finding), not its probability. The sigmoid saturates, so gradients of the probability vanish exactly when the model
is confident and Grad-CAM/IG maps fade for the cases users care about most; the calibrated logit keeps the
gradient signal, ranks pixels exactly like the raw logit (T > 0 is a constant), and is the quantity whose sigmoid
*is* the probability shown in the app, so IG's completeness check reads in the same units as the displayed number.

One modality is explained at a time with the other held fixed: image maps are computed with the notes' embedding
(and any other views' features) as constants, token scores with the image features as constants. How much each
modality matters as a whole is measured separately by removing it (``modality`` in the result).

Thread safety: the pipeline's model is shared by concurrent requests, so nothing here registers hooks on it or
changes it (Grad-CAM's hook goes on a per-call tap; the randomisation check works on a deep copy).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from medmm.explain.checks import faithfulness, randomization_check
from medmm.explain.explanation import TARGET, ExplainError, Explanation
from medmm.explain.image import display_heatmap, image_attribution, pipeline_reference, resize_map, view_inputs
from medmm.explain.methods import BY_KEY, METHOD_NAMES, METHODS, NOTES_METHODS, AttributionSettings
from medmm.explain.modality import modality_contribution
from medmm.explain.notes import evidence_tokens

if TYPE_CHECKING:
    from medmm.pipeline import ModelInputs, Pipeline
    from medmm.prediction import Prediction

log = logging.getLogger(__name__)

BASELINES = ("blur", "black")  # medmm.explain.image.reference_image


@dataclass(frozen=True)
class ExplainOptions:
    """How an explanation is computed (``explain``'s other arguments say what is explained)."""

    baseline: str = "blur"              # reference image for IG, the occlusion fill and deletion: blur | black
    n_steps: int = 16                   # IG steps: under a second on 2 cores; a note above 10 % completeness error
    notes_method: str = "evidence"      # note-word scores: medmm.explain.methods.NOTES_METHODS
    internal_batch_size: int = 16       # IG path points / occlusion windows per forward pass
    occlusion_window: int | None = None  # px; None: medmm.explain.methods.occlusion_geometry
    occlusion_stride: int | None = None
    randomize_stages: int | None = None  # randomisation-cascade stages (sanity; None: the method's default)
    faithfulness_steps: int = 10        # deletion / insertion steps (sanity)
    seed: int = 0                       # randomisation and random patch orders (sanity)

    def attribution_settings(self) -> AttributionSettings:
        return AttributionSettings(n_steps=self.n_steps, internal_batch_size=self.internal_batch_size,
                                   occlusion_window=self.occlusion_window, occlusion_stride=self.occlusion_stride)


def explain(pipeline: "Pipeline", inputs: "ModelInputs", prediction: "Prediction | None" = None,
            finding: str | None = None, method: str = "gradcam", sanity: bool = False, *, view: int = 0,
            options: ExplainOptions | None = None, **option_values: Any) -> Explanation:
    """Explain ``finding`` (default: the most probable) for a prepared request.

    ``method`` picks the image attribution (a key of ``medmm.explain.methods.REGISTRY``) of the **image model's own
    answer** (the notes do not enter the image model; they update its answer afterwards by Bayes' rule, see
    ``medmm.notes``). Note words are scored by their concepts' effect on the finding's log-odds
    (``evidence_tokens``). Modality contributions are always computed. ``view`` picks which scan to map when a
    request has several (the others stay in the model's input, fixed). ``sanity=True`` adds the cascading
    model-parameter randomisation check and deletion/insertion faithfulness (seconds on CPU; on request only).

    How: ``options`` (:class:`ExplainOptions`), or its fields as keywords (``n_steps=32``, ``baseline="black"``).
    Occlusion (and the faithfulness curves) run their forward-only perturbations through the pipeline's ONNX
    runtime when it has one (``pipeline.runtime``).
    """
    t_total = time.perf_counter()
    options = replace(options or ExplainOptions(), **option_values)
    _check_choices(method, options)
    if prediction is None:
        prediction = pipeline.predict_prepared(inputs)
    finding = _resolve_finding(pipeline, prediction, finding)
    index = pipeline.findings.index(finding)
    exp = Explanation(finding=finding, probability=float(prediction.findings[finding]), method=method)

    if inputs.pixels is not None:
        with torch.inference_mode(False), torch.enable_grad():  # callers may sit inside inference_mode
            _explain_image(exp, pipeline, inputs, index, view, sanity, options)
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


def _check_choices(method: str, options: ExplainOptions) -> None:
    if method not in METHODS:
        raise ExplainError(f"Unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}.")
    if options.baseline not in BASELINES:
        raise ExplainError(f"Unknown baseline {options.baseline!r}; choose 'blur' or 'black'.")
    if options.notes_method not in NOTES_METHODS:
        raise ExplainError(f"Unknown notes method {options.notes_method!r}; "
                           f"choose one of: {', '.join(NOTES_METHODS)}.")


def _explain_image(exp: Explanation, pipeline: "Pipeline", inputs: "ModelInputs", index: int, view: int,
                   sanity: bool, options: ExplainOptions) -> None:
    """The image half of :func:`explain`: the map of scan ``view`` (the other scans held fixed), its caveats, and
    with ``sanity`` the randomisation and faithfulness checks; written into ``exp``."""
    t = time.perf_counter()
    one = view_inputs(pipeline, inputs, view)
    exp.view = view
    if one.n_views > 1:
        exp.notes.append(f"The map shows scan {view + 1} of {one.n_views}; the other scans stay in the model's "
                         "input unchanged.")
    # a method without a reference image (Grad-CAM) does not pay for the blur unless the sanity checks need it
    ref = pipeline_reference(pipeline, one.x, options.baseline) if BY_KEY[exp.method].uses_reference or sanity \
        else None
    settings = options.attribution_settings()
    raw, extra = image_attribution(one.scorer, exp.method, one.x, ref, index, None, one.others, settings)
    exp.attributions = raw
    exp.heatmap = display_heatmap(raw, exp.method)
    exp.heatmap_scan = resize_map(exp.heatmap, inputs.scans[view].pixels.shape)
    exp.sanity.update(extra)
    err = extra.get("ig_completeness", {}).get("relative_error", 0.0)
    if err > 0.1:
        exp.notes.append(f"Integrated Gradients did not converge well (completeness error {err:.0%}); "
                         "more steps (n_steps) give a more reliable map.")
    if not exp.heatmap.any():
        exp.notes.append(f"{METHOD_NAMES[exp.method]} found no positive evidence for {exp.finding} in this scan.")
    exp.timings_s["image_s"] = time.perf_counter() - t

    if sanity:
        t = time.perf_counter()
        exp.sanity["randomization"] = randomization_check(one, exp.method, ref, index, raw,
                                                          stages=options.randomize_stages, seed=options.seed,
                                                          settings=settings)
        exp.sanity["faithfulness"] = faithfulness(one.scorer, one.x, ref, raw, index, None, one.others,
                                                  steps=options.faithfulness_steps, seed=options.seed)
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


__all__ = ["BASELINES", "TARGET", "ExplainError", "ExplainOptions", "Explanation", "explain"]
