"""Is the overlay caption's verdict right? "Usable to locate" vs "do not use this map to locate the finding",
against the 43 radiologist Pneumonia boxes of ``shared/data/nih_adult/bbox.csv``.

    .venv/bin/python scripts/saliency_caption_eval.py [--checkpoint DIR] [--out docs/saliency_caption_eval.json]

Each film goes through what the app runs on a request: ``medmm.service.run_request`` with
``explain={"finding": "Pneumonia", "method": DEFAULT_METHOD}`` and ``check_explanation=True`` on
``Pipeline.from_checkpoint()``. The caption's verdict is ``medmm.explain.saliency_check.verdict(check)["located"]``:
True = "may help you look at this area", anything else = "do not use this map to locate the finding".

Whether the map really locates the finding, two ways (``scripts/saliency_localisation.py``):

* **pointing game** (primary): the map's maximum lies inside the radiologist's box;
* **evidence in the box**: the share of the map's positive evidence inside the box is larger than the box's share
  of the film (better than a uniform map; the "energy" pointing game).

A verdict is right when "usable" maps hit and "do not use" maps miss. Reported: of maps called usable, how many hit
(precision); of maps called not usable, how many miss; overall agreement with a Wilson 95 % interval; the same for
each check alone, for the verdict before the lung-field check (faithful and agreeing), and for a caption that
always says "do not use". n = 43 films: the intervals are wide.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
# the sibling script (``python scripts/...`` puts scripts/ first on the path): one pointing game, one box reader
from saliency_localisation import box_share, pneumonia_boxes, pointing_hit

from medmm.training.data import SHARED_DATA

FINDING = "Pneumonia"
FILM = (512, 512)   # bbox.csv is in 512-px coordinates of these films


def wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    """Wilson score 95 % interval of k / n (None for n = 0)."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)]


def score(said_usable: list[bool], hit: list[bool]) -> dict:
    """How often a usable / not-usable call matches whether the map hit the box."""
    pairs = list(zip(said_usable, hit))
    usable = [h for u, h in pairs if u]
    not_usable = [h for u, h in pairs if not u]
    right = sum(1 for u, h in pairs if u == h)
    return {"said_usable": len(usable), "usable_and_hit": sum(usable),
            "usable_hit_rate": None if not usable else round(sum(usable) / len(usable), 3),
            "usable_hit_rate_ci95": wilson(sum(usable), len(usable)),
            "said_not_usable": len(not_usable), "not_usable_and_missed": len(not_usable) - sum(not_usable),
            "not_usable_miss_rate": None if not not_usable else round(1 - sum(not_usable) / len(not_usable), 3),
            "not_usable_miss_rate_ci95": wilson(len(not_usable) - sum(not_usable), len(not_usable)),
            "right": right, "n": len(pairs), "agreement": round(right / len(pairs), 3),
            "agreement_ci95": wilson(right, len(pairs))}


def run(checkpoint: str | None, limit: int | None = None) -> dict:
    from medmm.explain.methods import DEFAULT_METHOD
    from medmm.explain.saliency_check import LUNG_SHARE_MIN, outside_region, verdict
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.pipeline import Pipeline
    from medmm.service import run_request

    checkpoint = checkpoint or str(DEFAULT_CHECKPOINT)
    pipe = Pipeline.from_checkpoint(checkpoint)
    boxes = pneumonia_boxes()[:limit]
    rows, t0 = [], time.time()
    for r in boxes:
        box = (float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"]))
        result = run_request(pipe, [str(SHARED_DATA / "nih_adult" / "images" / r["image"])], None, report=False,
                             explain={"finding": FINDING, "method": DEFAULT_METHOD}, check_explanation=True)
        exp, check = result.explanation, result.explanation_check
        if exp is None or exp.attributions is None:   # refused by the input gate, or no map
            rows.append({"image": r["image"], "status": result.prediction.status, "explained": False})
            continue
        heat = np.clip(np.asarray(exp.attributions, np.float64), 0, None)
        v = verdict(check)
        where = outside_region(check)
        share = box_share(heat, box, FILM)
        area = box[2] * box[3] / (FILM[0] * FILM[1])
        iy, ix = np.unravel_index(int(np.argmax(heat)), heat.shape)
        max_x, max_y = (ix + 0.5) / heat.shape[1], (iy + 0.5) / heat.shape[0]
        box_x = (box[0] + box[2] / 2) / FILM[0]
        rows.append({"image": r["image"], "explained": True, "p": round(float(exp.probability), 4),
                     **{k: v[k] for k in ("faithful", "agree", "in_lungs", "located", "in_scope")},
                     "agreement_spearman": None if check is None else round(float(check["agreement_spearman"]), 3),
                     "lung_share": None if check is None or check.get("lung_share") is None
                     else round(float(check["lung_share"]), 3),
                     "most_outside": None if where is None else where[0],
                     "pointing_hit": bool(pointing_hit(heat, box, FILM)),
                     "box_share": round(share, 4), "box_area_share": round(area, 4),
                     "evidence_hit": bool(share > area),
                     "map_max_xy": [round(float(max_x), 3), round(float(max_y), 3)],
                     "max_on_box_side": bool((max_x < 0.5) == (box_x < 0.5))})
        print(f"{len(rows):2d}/{len(boxes)} {r['image']} located={v['located']} hit={rows[-1]['pointing_hit']} "
              f"lung={rows[-1]['lung_share']} box={share:.2f}/{area:.2f}", flush=True)
    done = [x for x in rows if x["explained"]]
    truths = {"pointing_game": [x["pointing_hit"] for x in done], "evidence_in_box": [x["evidence_hit"] for x in done]}
    callers = {"caption verdict (in scope & faithful & agree & in lungs)": [x["located"] is True for x in done],
               "the three checks without the scope table (faithful & agree & in lungs)":
                   [x["faithful"] is True and x["agree"] is True and x["in_lungs"] is True for x in done],
               "before the lung check (faithful & agree)": [x["faithful"] is True and x["agree"] is True for x in done],
               "faithful alone": [x["faithful"] is True for x in done],
               "agree alone": [x["agree"] is True for x in done],
               "in lungs alone": [x["in_lungs"] is True for x in done],
               "always 'do not use'": [False for _ in done]}
    return {"command": ".venv/bin/python scripts/saliency_caption_eval.py --out docs/saliency_caption_eval.json",
            "checkpoint": {"path": str(checkpoint), "sha256": pipe.meta.weights_sha256, "trained": pipe.meta.trained},
            "finding": FINDING, "method": DEFAULT_METHOD, "lung_share_min": LUNG_SHARE_MIN,
            "n_boxes": len(boxes), "n_explained": len(done), "seconds": round(time.time() - t0, 1),
            "hit_rate": {k: round(float(np.mean(t)), 3) for k, t in truths.items()},
            "random_point_hit_rate": round(float(np.mean([x["box_area_share"] for x in done])), 3),
            "verdict_counts": {str(k): sum(1 for x in done if x["located"] is k) for k in (True, False, None)},
            "checks_failed": {k: sum(1 for x in done if x[k] is False) for k in ("faithful", "agree", "in_lungs")},
            "most_outside_when_not_in_lungs": {w: sum(1 for x in done if x["in_lungs"] is False and x["most_outside"] == w)
                                               for w in sorted({x["most_outside"] for x in done if x["in_lungs"] is False})},
            "max_on_box_side_when_said_usable": sum(1 for x in done if x["located"] is True and x["max_on_box_side"]),
            "lung_share_median": float(np.median([x["lung_share"] for x in done if x["lung_share"] is not None])),
            "scores": {truth: {name: score(said, t) for name, said in callers.items()} for truth, t in truths.items()},
            "films": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N boxes (a quick try)")
    ap.add_argument("--out", default=None, help="write the JSON here (default: print)")
    args = ap.parse_args(argv)
    res = run(args.checkpoint, args.limit)
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "films"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
