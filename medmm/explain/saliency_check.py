"""Per-request checks of a saliency map before it is shown: is it faithful, and does a second method agree?

* **Faithfulness**: deletion / insertion of the map's top patches against random patch orders
  (``medmm.explain.checks.faithfulness``, ``STEPS`` steps, ``RANDOM_ORDERS`` random orders). A map whose deletion AUC is
  not below random (and whose insertion AUC is not above it) is *no better than random* for this request.
* **Agreement**: Spearman rank correlation, on the 16-px patch grid, between the positive evidence of the shown
  map and of a second method (Grad-CAM for IG / occlusion; IG with ``AGREEMENT_IG_STEPS`` steps for Grad-CAM).
  Below ``AGREEMENT_MIN`` the methods *disagree* on where the evidence is.
* **Lung fields**: the share of the map's positive evidence inside a fixed lung-field prior (two ellipses in the
  film's normalised coordinates, :data:`LUNG_FIELDS`; no segmentation model is available offline). Below
  ``LUNG_SHARE_MIN`` the evidence lies mostly *outside the lung fields* (mediastinum/heart, neck/shoulders, below
  the lungs or outside the lung area). Computed from the map already there: no extra model pass.

The map is **usable to locate** the finding (``verdict(check)["located"]``) only when all three pass. Otherwise the
caption and the panel say "Do not use this map to locate the finding" and why (``advice``).

Sized to run on every request: 14 forward-only images in one batched pass (through the pipeline's runtime) plus
one IG step (a forward/backward), about 0.07 s on 2 CPU cores (was 10 steps and IG-16, ~0.65 s). On 40 real films
its verdicts matched those of a full-size check (10 steps, 4 random orders, IG-32) on 38-40 of 40 per method
(``scripts/saliency_check_agreement.py`` -> docs/saliency_check_agreement.json). ``summarise`` turns the numbers
into the plain sentences the explanation panel shows (``medmm.serve.presenters`` draws the overlay's caption from
``verdict``). How often the "usable to locate" verdict is right on radiologist boxes:
``scripts/saliency_caption_eval.py`` -> docs/saliency_caption_eval.json (docs/explain.md).
"""

from __future__ import annotations

import math
from functools import lru_cache
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

# ---- lung-field prior (no segmentation model is available offline) -----------------------------------------------
# Normalised coordinates of the squashed film = of the model's input grid: x from the film's left edge, y from the top,
# both 0..1. A frontal film shows the patient's right lung on the viewer's left. Two ellipses (centre x, centre y,
# half-width, half-height), set by eye on frontal films of shared/data (NIH adult 512 px and Kermany children 224 px,
# drawn over 24 of them) so that they cover the aerated lung of most films and leave out the mediastinum/heart strip,
# the neck/shoulders and the abdomen. A stated prior, not a segmentation: it is wrong on rotated, cropped or unusually
# framed films (Kermany children's films often include the abdomen and arms; the lungs sit higher on them).
LUNG_FIELDS = ((0.29, 0.47, 0.16, 0.31),   # right lung (viewer's left)
               (0.71, 0.47, 0.16, 0.31))   # left lung (viewer's right)
NECK_Y = 0.16           # above: neck / shoulders (outside the ellipses)
ABDOMEN_Y = 0.78        # below: below the lungs (diaphragm, abdomen)
MEDIASTINUM_X = (0.40, 0.60)  # between (and outside the ellipses): mediastinum / heart
LUNG_SHARE_MIN = 0.5    # the map is "in the lung fields" when at least this share of its positive evidence lies there
REGIONS = ("lung fields", "mediastinum/heart", "neck/shoulders", "below the lungs", "outside the lung area")


@lru_cache(maxsize=8)
def region_map(size: int) -> np.ndarray:
    """``[size, size]`` int8 map of the prior: the index in :data:`REGIONS` of each pixel (0 = lung fields)."""
    c = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(c, c, indexing="ij")
    lung = np.zeros((size, size), bool)
    for cx, cy, rx, ry in LUNG_FIELDS:
        lung |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    out = np.full((size, size), 4, np.int8)                               # outside the lung area (chest wall, arms)
    out[(xx >= MEDIASTINUM_X[0]) & (xx <= MEDIASTINUM_X[1])] = 1          # mediastinum / heart
    out[yy > ABDOMEN_Y] = 3
    out[yy < NECK_Y] = 2
    out[lung] = 0
    out.flags.writeable = False
    return out


def region_shares(attributions: np.ndarray) -> dict[str, float] | None:
    """Share of the map's positive evidence in each region of the lung-field prior (None without positive
    evidence). ``attributions`` is a square map on the model grid (any size), e.g. ``Explanation.attributions``."""
    pos = np.maximum(np.asarray(attributions, np.float64), 0)
    if pos.ndim != 2 or pos.shape[0] != pos.shape[1]:
        raise ValueError(f"expected a square [S, S] map, got {pos.shape}")
    total = float(pos.sum())
    if not math.isfinite(total) or total <= 0:
        return None
    sums = np.bincount(region_map(pos.shape[0]).ravel(), weights=pos.ravel(), minlength=len(REGIONS))
    return {name: float(v / total) for name, v in zip(REGIONS, sums)}


def check_saliency(pipeline: Any, inputs: Any, explanation: Any, *, steps: int = STEPS,
                   random_orders: int = RANDOM_ORDERS, ig_steps: int = AGREEMENT_IG_STEPS, seed: int = 0,
                   compare_with: str | None = None, complete: bool = False) -> dict[str, Any] | None:
    """Faithfulness and cross-method agreement of ``explanation``'s map (None without an image map).

    The deletion curve comes first; the insertion curve only when deletion alone does not make the map faithful
    (``verdict``: either gain above ``MARGIN`` suffices, and the words then cite deletion), so its ``insertion_*``
    values are None when it was not needed: the same verdicts and words for ~40 % fewer encoder passes on most films.
    ``complete``: both curves always (the evaluation scripts)."""
    if explanation is None or explanation.attributions is None or inputs.pixels is None:
        return None
    import torch
    import torch.nn.functional as F

    from medmm.explain.checks import faithfulness, spearman
    from medmm.explain.image import image_attribution, pipeline_reference, view_inputs
    from medmm.explain.methods import AttributionSettings

    method = explanation.method
    index = pipeline.findings.index(explanation.finding)
    other = compare_with or BY_KEY[method].compare_with      # medmm.explain.methods
    txt = None  # the map explains the image model alone; the notes update its answer afterwards
    with torch.inference_mode(False), torch.enable_grad():
        # forward-only passes (the deletion/insertion curves) go through the pipeline's ONNX runtime / batcher when
        # it has one (same probabilities to ~1e-6, several times faster on a CPU); gradients still use the torch model
        one = view_inputs(pipeline, inputs, explanation.view or 0)
        ref = pipeline_reference(pipeline, one.x, "blur")
        curves = dict(steps=steps, random_orders=random_orders, seed=seed)
        faith = faithfulness(one.scorer, one.x, ref, explanation.attributions, index, txt, one.others, **curves,
                             directions=("deletion", "insertion") if complete else ("deletion",))
        if "insertion_gain" not in faith and not faith["deletion_gain"] > MARGIN:
            faith.update(faithfulness(one.scorer, one.x, ref, explanation.attributions, index, txt, one.others,
                                      **curves, directions=("insertion",), ends=faith["ends"]))
        settings = AttributionSettings(n_steps=ig_steps, internal_batch_size=max(1, ig_steps), completeness=False)
        raw2, _ = image_attribution(one.scorer, other, one.x, ref, index, txt, one.others, settings)

    def patches(raw: np.ndarray) -> np.ndarray:
        size = raw.shape[-1]
        patch = max(2, round(size / 14))
        pos = torch.from_numpy(np.maximum(np.asarray(raw, np.float32), 0))[None, None]
        return F.avg_pool2d(pos, patch, ceil_mode=True)[0, 0].numpy()

    rho = spearman(patches(explanation.attributions), patches(raw2))
    shares = region_shares(explanation.attributions)
    return {"method": method, "compared_with": other, "agreement_spearman": rho,
            "lung_share": None if shares is None else shares["lung fields"], "region_shares": shares,
            "deletion_auc": faith["deletion_auc"], "deletion_auc_random": faith["deletion_auc_random"],
            "insertion_auc": faith.get("insertion_auc"), "insertion_auc_random": faith.get("insertion_auc_random"),
            "deletion_gain": faith["deletion_gain"], "insertion_gain": faith.get("insertion_gain"),
            "steps": faith["steps"], "random_orders": random_orders,
            "compared_ig_steps": ig_steps if other == "ig" else None}


def verdict(check: dict[str, Any] | None) -> dict[str, bool | None]:
    """``{"faithful", "agree", "in_lungs", "located", "in_scope"}``, each bool or None (not measured).

    ``in_scope`` (``check["finding_in_scope"]``, set by ``medmm.service``): False when the explained finding is not
    assessed on this film (the checkpoint's scope table, e.g. any finding on an adult film); ``located`` is then False.

    ``located`` (usable to locate the finding) is True only when the map is better than random, the second method
    agrees and at least ``LUNG_SHARE_MIN`` of its positive evidence lies in the lung fields; False as soon as one of
    them fails; None when none failed but not all were measured (treated as "do not use" by the wording)."""
    if not check:
        return {"faithful": None, "agree": None, "in_lungs": None, "located": None}
    gains = [check.get("deletion_gain"), check.get("insertion_gain")]
    gains = [g for g in gains if g is not None and math.isfinite(g)]
    faithful = None if not gains else any(g > MARGIN for g in gains)
    rho = check.get("agreement_spearman")
    agree = None if rho is None or not math.isfinite(rho) else rho >= AGREEMENT_MIN
    share = check.get("lung_share")
    in_lungs = None if share is None or not math.isfinite(share) else share >= LUNG_SHARE_MIN
    parts = (faithful, agree, in_lungs)
    located = False if False in parts else (True if all(p is True for p in parts) else None)
    in_scope = check.get("finding_in_scope")   # set by medmm.service: is the explained finding assessed here?
    if in_scope is False:
        located = False
    return {"faithful": faithful, "agree": agree, "in_lungs": in_lungs, "located": located, "in_scope": in_scope}


DO_NOT_LOCATE = "Do not use this map to locate the finding"
# where the evidence lies when it is not in the lung fields: (panel wording, short caption wording)
WHERE = {"mediastinum/heart": ("on the mediastinum and heart", "on heart/mediastinum"),
         "neck/shoulders": ("on the neck and shoulders", "on neck/shoulders"),
         "below the lungs": ("below the lungs (diaphragm, abdomen)", "below the lungs"),
         "outside the lung area": ("outside the lung area (chest wall, arms, film edges)", "outside the lungs")}


def outside_region(check: dict[str, Any] | None) -> tuple[str, float] | None:
    """The region outside the lung fields that holds the most positive evidence, with its share (None if unknown)."""
    shares = (check or {}).get("region_shares")
    if not shares:
        return None
    name = max((r for r in REGIONS[1:] if r in shares), key=lambda r: shares[r], default=None)
    return None if name is None else (name, float(shares[name]))


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def advice(check: dict[str, Any] | None, method_names: dict[str, str] | None = None) -> str:
    """What the verdict means for the clinician, in one sentence: use the map to look, or do not use it to locate."""
    if not check:
        return f"This map was not checked: {DO_NOT_LOCATE[0].lower()}{DO_NOT_LOCATE[1:]}."
    names = method_names or {}
    v = verdict(check)
    other = names.get(check["compared_with"], check["compared_with"])
    if v["located"]:
        return (f"All three checks passed (better than random, {other} agrees, {_pct(check['lung_share'])} of the "
                "evidence in the lung fields): the highlighted area may help you decide where to look on the film, "
                "but it is not proof of where the finding is; the checks do not test whether the map points at the "
                "finding itself.")
    reasons = []
    if v["in_scope"] is False:
        reasons.append("the model does not assess this finding on this film (see the findings table)")
    if v["faithful"] is False:
        reasons.append("the highlighted areas matter no more to the result than random areas")
    if v["agree"] is False:
        reasons.append(f"a second method ({other}) highlights different areas")
    if v["in_lungs"] is False:
        where = outside_region(check)
        place = WHERE[where[0]][0] if where else "outside the lung fields"
        reasons.append(f"most of its evidence lies {place}, not in the lung fields "
                       f"({_pct(check['lung_share'])} inside)")
    if not reasons:
        missing = [n for k, n in (("faithful", "faithfulness"), ("agree", "agreement"), ("in_lungs", "lung fields"))
                   if v[k] is None]
        reasons.append(f"not every check could be run ({', '.join(missing)})")
    return f"{DO_NOT_LOCATE}: {'; '.join(reasons)}."


def details(check: dict[str, Any] | None, method_names: dict[str, str] | None = None) -> str:
    """The numbers behind :func:`advice`: faithfulness, agreement and the lung-field share, one sentence each."""
    if not check:
        return "Faithfulness not checked for this map."
    names = method_names or {}
    v = verdict(check)
    d, dr = check["deletion_auc"], check["deletion_auc_random"]
    by_deletion = (check.get("deletion_gain") or 0.0) > MARGIN    # faithful by deletion, else by insertion alone
    if v["faithful"] is None:
        first = "Faithfulness could not be measured for this map."
    elif v["faithful"] and by_deletion:
        first = (f"Faithfulness: better than random; deleting the highlighted areas lowers the probability faster than "
                 f"random areas (deletion AUC {d:.3f} vs {dr:.3f} random).")
    elif v["faithful"]:
        first = (f"Faithfulness: better than random; restoring the highlighted areas first raises the probability "
                 f"faster than restoring random areas (insertion AUC {check['insertion_auc']:.3f} vs "
                 f"{check['insertion_auc_random']:.3f} random; deleting them does no better than random: deletion AUC "
                 f"{d:.3f} vs {dr:.3f}).")
    else:
        first = (f"NO BETTER THAN RANDOM: deleting the highlighted areas changes the probability no more than "
                 f"deleting random areas (deletion AUC {d:.3f} vs {dr:.3f} random).")
    other = names.get(check["compared_with"], check["compared_with"])
    rho = check.get("agreement_spearman")
    if v["agree"] is None:
        second = f"Agreement with {other} could not be measured."
    elif v["agree"]:
        second = f"{other} broadly agrees (Spearman {rho:.2f})."
    else:
        second = f"METHODS DISAGREE: {other} highlights different areas (Spearman {rho:.2f})."
    sentences = [first, second]
    if v["in_lungs"] is not None:
        share = _pct(check["lung_share"])
        if v["in_lungs"]:
            sentences.append(f"Lung fields: {share} of the positive evidence lies inside them.")
        else:
            where = outside_region(check)
            most = f"; {_pct(where[1])} lies {WHERE[where[0]][0]}" if where else ""
            sentences.append(f"OUTSIDE THE LUNG FIELDS: only {share} of the positive evidence lies inside them{most}.")
        sentences.append("(The lung fields are a fixed outline of where the lungs lie on a frontal film, not a "
                         "segmentation of this one.)")
    return " ".join(sentences)


def summarise(check: dict[str, Any] | None, method_names: dict[str, str] | None = None) -> str:
    """Plain sentences: what to do with the map (:func:`advice`), then the checks' numbers (:func:`details`)."""
    return f"{advice(check, method_names)} {details(check, method_names)}"


__all__ = ["ABDOMEN_Y", "AGREEMENT_IG_STEPS", "AGREEMENT_MIN", "DO_NOT_LOCATE", "LUNG_FIELDS", "LUNG_SHARE_MIN",
           "MARGIN", "MEDIASTINUM_X", "NECK_Y", "RANDOM_ORDERS", "REGIONS", "STEPS", "WHERE", "advice",
           "check_saliency", "details", "outside_region", "region_map", "region_shares", "summarise", "verdict"]
