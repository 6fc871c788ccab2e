#!/usr/bin/env python
"""Latency of each explanation method on one real radiograph (median of several runs). Prints one JSON object.

    .venv/bin/python scripts/bench_explain.py --repeats 5
    .venv/bin/python scripts/bench_explain.py --threads 1 --no-sanity --quality 10   # + accuracy of the fast paths

Image attribution is timed on an image-only request (so the number is the map alone); token attribution on a
notes-only request; "full" is an image + notes request with Grad-CAM (what the app runs); sanity checks once each.
Uses ../shared/data/kermany224/train/PNEUMONIA/ (skips with a JSON reason when absent). Record the machine's load
average with the numbers: on a shared machine, contention inflates wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

from medmm.training.data import SHARED_DATA  # honours MEDMM_SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
KERMANY = SHARED_DATA / "kermany224" / "train" / "PNEUMONIA"
NOTES = "3 year old with fever, cough and fast breathing for 2 days; crackles at the right base. ?pneumonia"


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="checkpoint folder (default: checkpoints/default)")
    ap.add_argument("--image", default=None, help="radiograph (default: the first file in kermany224 PNEUMONIA)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--no-sanity", action="store_true", help="skip timing the sanity checks")
    ap.add_argument("--quality", type=int, default=0, metavar="N",
                    help="also measure, on N real images: IG completeness error per step count")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    image = Path(args.image) if args.image else (min(KERMANY.glob("*.jpeg")) if KERMANY.is_dir() else None)
    if image is None or not image.is_file():
        print(json.dumps({"skipped": f"no radiograph found ({args.image or KERMANY})"}))
        return 0

    import torch

    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.explain import METHODS, NOTES_METHODS, explain
    from medmm.pipeline import Pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t = time.perf_counter()
    pipe = Pipeline.from_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT, device="cpu")
    load_s = time.perf_counter() - t
    img_inputs = pipe.prepare([image], None)
    txt_inputs = pipe.prepare([], NOTES)
    both_inputs = pipe.prepare([image], NOTES)
    preds = {k: pipe.predict_prepared(v) for k, v in
             (("image", img_inputs), ("notes", txt_inputs), ("both", both_inputs))}

    t = time.perf_counter()
    explain(pipe, both_inputs, preds["both"], method="gradcam")  # warm-up: Captum import, first-call allocations
    first_call_s = time.perf_counter() - t

    results: dict[str, dict[str, float]] = {}
    for method in METHODS:
        runs = [explain(pipe, img_inputs, preds["image"], method=method) for _ in range(args.repeats)]  # defaults
        results[method] = {"image_s_median": _median([r.timings_s["image_s"] for r in runs]),
                           "total_s_median": _median([r.timings_s["total_s"] for r in runs]),
                           "runs": len(runs)}
        if method == "ig":
            results[method]["completeness_relative_error"] = round(runs[0].sanity["ig_completeness"]["relative_error"], 5)
    for notes_method in NOTES_METHODS:  # the notes' evidence (medmm/notes): each concept's effect, leave-one-out
        runs = [explain(pipe, txt_inputs, preds["notes"], notes_method=notes_method) for _ in range(args.repeats)]
        results[f"notes_tokens_{notes_method}"] = {
            "tokens_s_median": _median([r.timings_s["tokens_s"] for r in runs]),
            "n_concepts": len(runs[0].sanity["notes_evidence"]["effects"]), "runs": len(runs)}
    runs = [explain(pipe, both_inputs, preds["both"], method="gradcam") for _ in range(args.repeats)]
    results["full_gradcam_image_and_notes"] = {"total_s_median": _median([r.timings_s["total_s"] for r in runs]),
                                               "runs": len(runs)}
    if not args.no_sanity:
        for method in METHODS:
            r = explain(pipe, img_inputs, preds["image"], method=method, sanity=True)
            stages = r.sanity["randomization"]["stages"]
            results[f"sanity_{method}"] = {
                "sanity_s": round(r.timings_s["sanity_s"], 3), "stages": len(stages),
                "spearman_last_stage": round(stages[-1]["spearman"], 4),
                "deletion_gain": round(r.sanity["faithfulness"]["deletion_gain"], 4),
                "insertion_gain": round(r.sanity["faithfulness"]["insertion_gain"], 4)}

    if args.quality:
        results["quality"] = quality(pipe, args.quality)

    out = {
        "image": str(image.relative_to(ROOT.parent)) if image.is_relative_to(ROOT.parent) else str(image),
        "checkpoint": {"name": pipe.meta.name, "trained": pipe.meta.trained}, "runtime": pipe.runtime_name,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "pipeline_load_s": round(load_s, 3), "first_explain_call_s": round(first_call_s, 3),
        "repeats": args.repeats, "results": results,
    }
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def quality(pipe, n: int) -> dict:
    """Accuracy side of the speed choices (no timings): IG completeness vs steps on real films. (The note words are
    the notes' evidence, exact by construction; the neural note-word methods this once compared were removed.)"""
    import numpy as np

    from medmm.explain import explain

    films = sorted(KERMANY.glob("*.jpeg"))[:n] if KERMANY.is_dir() else []
    nih = SHARED_DATA / "nih_adult" / "images"
    films += sorted(nih.glob("*.jpg"))[:n] if nih.is_dir() else []
    steps_err: dict[int, list[float]] = {}
    for film in films[: 2 * n]:
        inputs = pipe.prepare([film], None)
        pred = pipe.predict_prepared(inputs)
        for steps in (8, 16, 24, 32, 48):
            e = explain(pipe, inputs, pred, finding="Pneumonia", method="ig", n_steps=steps)
            steps_err.setdefault(steps, []).append(e.sanity["ig_completeness"]["relative_error"])
    out: dict = {"ig_images": len(films[: 2 * n]),
                 "ig_completeness_relative_error_median": {s: round(float(np.median(v)), 4) for s, v in steps_err.items()},
                 "ig_completeness_relative_error_p90": {s: round(float(np.percentile(v, 90)), 4) for s, v in steps_err.items()}}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
