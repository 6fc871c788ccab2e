"""Does the per-request saliency check say the same when it skips the insertion curve it does not need?

    python scripts/saliency_check_lazy.py [--per-source 20] [--methods gradcam] [--out docs/saliency_check_lazy.json]

``check_saliency`` computes the deletion curve first and the insertion curve only when deletion alone does not make
the map faithful (``complete=False``, what the app runs). This script explains real films the way the app does
(most probable finding), runs the check both ways on the same explanation (``complete=True``: both curves in one
pass, as before) and reports: verdicts equal, the words shown to the clinician (``summarise``) equal, the largest
difference of the deletion numbers, how often insertion was skipped, and the time of each. Films: a fixed random
sample of Kermany (children) and ``nih_sample`` (adults), as ``scripts/saliency_check_agreement.py`` draws them.
Exit status 1 when a verdict or a sentence differs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from medmm.models.checkpoint import DEFAULT_CHECKPOINT


def run(checkpoint: str, per_source: int, methods: tuple[str, ...]) -> dict:
    from saliency_check_agreement import films

    from medmm.explain import explain
    from medmm.explain.methods import METHOD_NAMES
    from medmm.explain.saliency_check import check_saliency, summarise, verdict
    from medmm.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(checkpoint)
    rows, differing = [], []
    for source, path in films(per_source):
        inputs = pipe.prepare([str(path)])
        for method in methods:
            exp = explain(pipe, inputs, method=method)
            times = {}
            checks = {}
            for mode, complete in (("complete", True), ("lazy", False)):
                t = time.perf_counter()
                checks[mode] = check_saliency(pipe, inputs, exp, complete=complete)
                times[mode] = time.perf_counter() - t
            full, lazy = checks["complete"], checks["lazy"]
            same = (verdict(full) == verdict(lazy)
                    and summarise(full, METHOD_NAMES) == summarise(lazy, METHOD_NAMES))
            row = {"source": source, "film": path.name, "method": method, "same": same,
                   "insertion_skipped": lazy["insertion_gain"] is None,
                   "max_abs_diff_deletion": max(abs(full[k] - lazy[k]) for k in
                                                ("deletion_auc", "deletion_auc_random", "deletion_gain")),
                   "s_complete": round(times["complete"], 4), "s_lazy": round(times["lazy"], 4)}
            rows.append(row)
            if not same:
                differing.append(row)
    n = len(rows)
    return {"command": "python scripts/saliency_check_lazy.py", "checkpoint": str(checkpoint), "checks": n,
            "methods": list(methods), "same_verdict_and_words": n - len(differing), "differing": differing,
            "insertion_skipped": sum(r["insertion_skipped"] for r in rows),
            "max_abs_diff_deletion": max((r["max_abs_diff_deletion"] for r in rows), default=None),
            "median_s_complete": round(sorted(r["s_complete"] for r in rows)[n // 2], 4) if n else None,
            "median_s_lazy": round(sorted(r["s_lazy"] for r in rows)[n // 2], 4) if n else None,
            "total_s_complete": round(sum(r["s_complete"] for r in rows), 2),
            "total_s_lazy": round(sum(r["s_lazy"] for r in rows), 2),
            "loadavg_end": [round(x, 2) for x in os.getloadavg()], "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--per-source", type=int, default=20, help="films per source (Kermany, nih_sample)")
    ap.add_argument("--methods", default="gradcam", help="comma-separated image methods (default: the app's)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    result = run(args.checkpoint, args.per_source, tuple(m for m in args.methods.split(",") if m))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    summary = {k: v for k, v in result.items() if k != "rows"}
    print(json.dumps(summary, indent=1))
    return 0 if not result["differing"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
