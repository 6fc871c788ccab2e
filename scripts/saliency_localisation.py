"""Do the saliency maps look at the lungs? Pointing game on radiologist boxes + border share on Kermany.

    python scripts/saliency_localisation.py [--checkpoint checkpoints/default] [--kermany 60] [--out FILE.json]

* **Pointing game** (Zhang et al. 2016): on the NIH Pneumonia films of ``shared/data/nih_adult/bbox.csv``
  (radiologist boxes, 512-px coordinates), a map *hits* when its maximum lies inside the box. Reported with the
  hit rate a uniformly random point would get (mean box area / image area).
* **Border share**: on Kermany films (a fixed random sample), the share of positive attribution mass in the outer
  10 % of the image on every side (36 % of the area). A model whose evidence sits on the borders reads shortcuts
  (markers, collimation, text); a uniform map scores 0.36.

Maps are explained for "Pneumonia" with each method of ``medmm.explain`` (Grad-CAM, Integrated Gradients,
occlusion) through the same ``Pipeline`` the app uses.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from medmm.training.data import SHARED_DATA
from medmm.explain.methods import METHODS
BORDER = 0.10


def border_share(heat: np.ndarray, frac: float = BORDER) -> float:
    """Share of the (non-negative) map's mass in the outer ``frac`` band on every side."""
    h, w = heat.shape
    bh, bw = int(round(frac * h)), int(round(frac * w))
    total = float(heat.sum())
    if total <= 0:
        return float("nan")
    inner = float(heat[bh:h - bh, bw:w - bw].sum())
    return 1.0 - inner / total


def pointing_hit(heat: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> bool:
    """Is the map's maximum (model grid, squashed) inside ``box`` = (x, y, w, h) in the film's ``size`` (W, H)?"""
    s_h, s_w = heat.shape
    iy, ix = np.unravel_index(int(np.argmax(heat)), heat.shape)
    x = (ix + 0.5) * size[0] / s_w
    y = (iy + 0.5) * size[1] / s_h
    bx, by, bw, bh = box
    return bx <= x <= bx + bw and by <= y <= by + bh


def box_share(heat: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> float:
    """Share of the (non-negative) map's mass inside ``box`` = (x, y, w, h) in the film's ``size`` (W, H); the map
    lies on the model grid (squashed), pixel centres decide (nan without positive mass)."""
    s_h, s_w = heat.shape
    total = float(heat.sum())
    if total <= 0:
        return float("nan")
    bx, by, bw, bh = box
    xs = (np.arange(s_w) + 0.5) * size[0] / s_w
    ys = (np.arange(s_h) + 0.5) * size[1] / s_h
    inside = ((ys >= by) & (ys <= by + bh))[:, None] & ((xs >= bx) & (xs <= bx + bw))[None, :]
    return float(heat[inside].sum()) / total


def pneumonia_boxes() -> list[dict]:
    """The radiologist Pneumonia boxes of ``shared/data/nih_adult/bbox.csv`` (512-px films; x, y, w, h)."""
    with open(SHARED_DATA / "nih_adult" / "bbox.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["finding"] == "Pneumonia"]


def _heat(pipe, path: str, method: str) -> np.ndarray:
    from medmm.explain import explain

    inputs = pipe.prepare([path])
    exp = explain(pipe, inputs, finding="Pneumonia", method=method)
    return np.clip(np.asarray(exp.attributions, np.float64), 0, None)


def run(checkpoint: str, n_kermany: int, seed: int = 0) -> dict:
    from medmm.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(checkpoint)
    root = SHARED_DATA / "nih_adult"
    boxes = pneumonia_boxes()
    result: dict = {"checkpoint": {"path": str(checkpoint), "sha256": pipe.meta.weights_sha256},
                    "pointing_game": {}, "border_share": {}}
    areas = [float(r["w"]) * float(r["h"]) / (512 * 512) for r in boxes]
    result["pointing_game"]["n_boxes"] = len(boxes)
    result["pointing_game"]["random_point_hit_rate"] = float(np.mean(areas))
    for method in METHODS:
        t0 = time.time()
        hits = [pointing_hit(_heat(pipe, str(root / "images" / r["image"]), method),
                             (float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"])), (512, 512))
                for r in boxes]
        result["pointing_game"][method] = {"hit_rate": float(np.mean(hits)), "hits": int(sum(hits)),
                                           "seconds": round(time.time() - t0, 1)}
        print(f"pointing game {method}: {sum(hits)}/{len(hits)}", flush=True)
    files = sorted((SHARED_DATA / "kermany224" / "train").glob("*/*.jpeg"))
    rng = np.random.default_rng(seed)
    sample = [files[i] for i in sorted(rng.choice(len(files), min(n_kermany, len(files)), replace=False))]
    result["border_share"]["n_images"] = len(sample)
    result["border_share"]["uniform_map"] = 1 - (1 - 2 * BORDER) ** 2
    for method in METHODS:
        shares = [border_share(_heat(pipe, str(p), method)) for p in sample]
        shares = [s for s in shares if np.isfinite(s)]
        result["border_share"][method] = {"mean": float(np.mean(shares)), "median": float(np.median(shares)),
                                          "n": len(shares)}
        print(f"border share {method}: {np.mean(shares):.3f}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped one)")
    ap.add_argument("--kermany", type=int, default=60, help="Kermany films for the border share")
    ap.add_argument("--out", default=None, help="write the JSON here (default: print)")
    args = ap.parse_args(argv)
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT

    res = run(args.checkpoint or str(DEFAULT_CHECKPOINT), args.kermany)
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
