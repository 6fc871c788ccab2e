"""Per-request checks of a saliency map before it is shown: is it faithful, and does a second method agree?

* **Faithfulness**: deletion / insertion of the map's top patches against random patch orders
  (``medmm.explain.faithfulness``, ``STEPS`` steps, ``RANDOM_ORDERS`` random orders). A map whose deletion AUC is
  not below random (and whose insertion AUC is not above it) is *no better than random* for this request.
* **Agreement**: Spearman rank correlation, on the 16-px patch grid, between the positive evidence of the shown
  map and of a second method (Grad-CAM for IG / occlusion; IG with ``AGREEMENT_IG_STEPS`` steps for Grad-CAM).
  Below ``AGREEMENT_MIN`` the methods *disagree* on where the evidence is.

Sized to run on every request: 14 forward-only images in one batched pass (through the pipeline's runtime) plus
one IG step (a forward/backward), about 0.07 s on 2 CPU cores (was 10 steps and IG-16, ~0.65 s). On 40 real films
its verdicts matched those of a full-size check (10 steps, 4 random orders, IG-32) on 38-40 of 40 per method
(``scripts/saliency_check_agreement.py`` -> docs/saliency_check_agreement.json). ``summarise`` turns the numbers
into the plain sentence the overlay caption and the explanation panel show.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medmm.explain.methods import BY_KEY

AGREEMENT_MIN = 0.3     # Spearman of patch-level positive evidence below which two methods "disagree"
MARGIN = 0.01           # AUC gain within +-MARGIN of random counts as "no better than random"
# sized by scripts/saliency_check_agreement.py (docs/bench.md): with these, the verdicts match a full-size check's
# (10 steps, 4 random orders, IG-32) on real films, at about a tenth of its cost
STEPS = 3               # deletion / insertion steps of the per-request check
RANDOM_ORDERS = 2       # random patch orders the map is compared with
AGREEMENT_IG_STEPS = 1  # IG steps of the map Grad-CAM is compared with (1 step: the gradient at the midpoint x delta)


def check_saliency(pipeline: Any, inputs: Any, explanation: Any, *, steps: int = STEPS,
                   random_orders: int = RANDOM_ORDERS, ig_steps: int = AGREEMENT_IG_STEPS, seed: int = 0,
                   compare_with: str | None = None) -> dict[str, Any] | None:
    """Faithfulness and cross-method agreement of ``explanation``'s map (None without an image map)."""
    if explanation is None or explanation.attributions is None or inputs.pixels is None:
        return None
    import torch
    import torch.nn.functional as F

    from medmm.explain import attribution as ex

    view, method = explanation.view or 0, explanation.method
    index = pipeline.findings.index(explanation.finding)
    other = compare_with or BY_KEY[method].compare_with      # medmm.explain.methods
    model = pipeline.model
    temperatures = pipeline.temperatures.to(pipeline.device)
    with torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            _, views_feat = ex._image_features(pipeline, inputs)
            txt = None  # the map explains the image model alone; the notes update its answer afterwards
        n_views = inputs.pixels.shape[1]
        others = None if n_views == 1 else (views_feat.sum(1) - views_feat[:, view])
        x = inputs.pixels[:, view]
        prep = pipeline.meta.preprocessing
        ref = ex.reference_image(x, "blur", black=[-m / sd for m, sd in zip(prep.mean, prep.std)])
        # forward-only passes (the deletion/insertion curves) through the pipeline's ONNX runtime / batcher when it
        # has one (same probabilities to ~1e-6, several times faster on a CPU); gradients still use the torch model
        scorer = ex._ImageScorer(model, temperatures, n_views, encode=pipeline.forward_only_encoder())
        faith = ex.faithfulness(scorer, x, ref, explanation.attributions, index, txt, others, steps=steps,
                                random_orders=random_orders, seed=seed)
        raw2, _ = ex.image_attribution(scorer, other, x, ref, index, txt, others, n_steps=ig_steps,
                                       internal_batch_size=max(1, ig_steps), completeness=False)

    def patches(raw: np.ndarray) -> np.ndarray:
        size = raw.shape[-1]
        patch = max(2, round(size / 14))
        pos = torch.from_numpy(np.maximum(np.asarray(raw, np.float32), 0))[None, None]
        return F.avg_pool2d(pos, patch, ceil_mode=True)[0, 0].numpy()

    rho = ex.spearman(patches(explanation.attributions), patches(raw2))
    return {"method": method, "compared_with": other, "agreement_spearman": rho,
            "deletion_auc": faith["deletion_auc"], "deletion_auc_random": faith["deletion_auc_random"],
            "insertion_auc": faith["insertion_auc"], "insertion_auc_random": faith["insertion_auc_random"],
            "deletion_gain": faith["deletion_gain"], "insertion_gain": faith["insertion_gain"],
            "steps": faith["steps"], "random_orders": random_orders,
            "compared_ig_steps": ig_steps if other == "ig" else None}


def verdict(check: dict[str, Any] | None) -> dict[str, bool | None]:
    """``{"faithful": bool|None, "agree": bool|None}`` (None when not measured)."""
    if not check:
        return {"faithful": None, "agree": None}
    gains = [check.get("deletion_gain"), check.get("insertion_gain")]
    gains = [g for g in gains if g is not None and math.isfinite(g)]
    faithful = None if not gains else any(g > MARGIN for g in gains)
    rho = check.get("agreement_spearman")
    agree = None if rho is None or not math.isfinite(rho) else rho >= AGREEMENT_MIN
    return {"faithful": faithful, "agree": agree}


def summarise(check: dict[str, Any] | None, method_names: dict[str, str] | None = None) -> str:
    """One or two plain sentences: the faithfulness result and whether a second method agrees."""
    if not check:
        return "Faithfulness not checked for this map."
    names = method_names or {}
    v = verdict(check)
    d, dr = check["deletion_auc"], check["deletion_auc_random"]
    if v["faithful"] is None:
        first = "Faithfulness could not be measured for this map."
    elif v["faithful"]:
        first = (f"Faithfulness: better than random; deleting the highlighted areas lowers the probability faster than "
                 f"random areas (deletion AUC {d:.3f} vs {dr:.3f} random).")
    else:
        first = (f"NO BETTER THAN RANDOM: deleting the highlighted areas changes the probability no more than "
                 f"deleting random areas (deletion AUC {d:.3f} vs {dr:.3f} random); do not read this map as "
                 "where the evidence is.")
    other = names.get(check["compared_with"], check["compared_with"])
    rho = check.get("agreement_spearman")
    if v["agree"] is None:
        second = f"Agreement with {other} could not be measured."
    elif v["agree"]:
        second = f"{other} broadly agrees (Spearman {rho:.2f})."
    else:
        second = f"METHODS DISAGREE: {other} highlights different areas (Spearman {rho:.2f})."
    return f"{first} {second}"


__all__ = ["AGREEMENT_IG_STEPS", "AGREEMENT_MIN", "MARGIN", "RANDOM_ORDERS", "STEPS", "check_saliency", "summarise", "verdict"]
