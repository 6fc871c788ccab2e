"""Could the per-request saliency check run its curves in bf16? Measured, and rejected (docs/bench.md, issue 28).

    python scripts/saliency_check_bf16.py [--per-source 60] [--out docs/saliency_check_bf16.json]

The check's deletion/insertion curves are forward-only passes of the image encoder (about half of a served request's
CPU). OpenVINO runs the same graph in bf16 (``INFERENCE_PRECISION_HINT``) about twice as fast on a CPU with
AVX512_BF16. This script explains real films as the app does (Grad-CAM of the most probable finding), runs the check
with the runtime's fp32 encoder and with a bf16 compilation of the same graph, and reports: verdicts equal, the
largest and typical differences of the deletion numbers, the gain's distance to the verdict's margin, and the
check's median time each way. Films: ``scripts/saliency_check_agreement.films`` (Kermany, nih_sample).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from medmm.models.checkpoint import DEFAULT_CHECKPOINT


def run(checkpoint: str, per_source: int) -> dict:
    import openvino as ov
    import torch
    from saliency_check_agreement import films

    from medmm.explain import explain
    from medmm.explain.saliency_check import MARGIN, check_saliency, verdict
    from medmm.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(checkpoint)
    if pipe.runtime is None or "image_encoder" not in pipe.runtime.files:
        raise SystemExit("needs the OpenVINO runtime's image graph (python -m medmm warmup)")
    compiled = ov.Core().compile_model(pipe.runtime.files["image_encoder"], "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    request = compiled.create_infer_request()
    name = compiled.inputs[0].get_any_name()

    def bf16_encode(x: torch.Tensor) -> torch.Tensor:
        request.infer({name: np.ascontiguousarray(x.detach().float().cpu().numpy())})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    fp32 = pipe.forward_only_encoder
    rows = []
    for source, path in films(per_source):
        inputs = pipe.prepare([str(path)])
        exp = explain(pipe, inputs, method="gradcam")
        checks, times = {}, {}
        for mode, encoder in (("fp32", fp32), ("bf16", lambda: bf16_encode)):
            pipe.forward_only_encoder = encoder
            t = time.perf_counter()
            checks[mode] = check_saliency(pipe, inputs, exp)
            times[mode] = time.perf_counter() - t
        a, b = checks["fp32"], checks["bf16"]
        rows.append({"source": source, "film": path.name, "same_verdict": verdict(a) == verdict(b),
                     "gain_fp32": a["deletion_gain"], "gain_bf16": b["deletion_gain"],
                     "max_abs_diff_deletion": max(abs(a[k] - b[k]) for k in
                                                  ("deletion_auc", "deletion_auc_random", "deletion_gain")),
                     "s_fp32": round(times["fp32"], 4), "s_bf16": round(times["bf16"], 4)})
    gain_diff = np.array([abs(r["gain_fp32"] - r["gain_bf16"]) for r in rows])
    near = np.array([abs(r["gain_fp32"] - MARGIN) for r in rows])
    return {"command": "python scripts/saliency_check_bf16.py", "checkpoint": str(checkpoint), "checks": len(rows),
            "same_verdict": sum(r["same_verdict"] for r in rows), "margin": MARGIN,
            "deletion_gain_abs_diff": {q: round(float(np.percentile(gain_diff, p)), 4)
                                       for q, p in (("p50", 50), ("p90", 90), ("max", 100))},
            "max_abs_diff_deletion": round(max(r["max_abs_diff_deletion"] for r in rows), 4),
            "films_with_gain_within_0.02_of_margin": int((near < 0.02).sum()),
            "median_s_fp32": round(float(np.median([r["s_fp32"] for r in rows])), 4),
            "median_s_bf16": round(float(np.median([r["s_bf16"] for r in rows])), 4),
            "loadavg_end": [round(x, 2) for x in os.getloadavg()], "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--per-source", type=int, default=60, help="films per source (Kermany, nih_sample)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    result = run(args.checkpoint, args.per_source)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
