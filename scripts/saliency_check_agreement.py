"""Does the per-request saliency check give the verdicts a full-size check would give?

    python scripts/saliency_check_agreement.py [--per-source 12] [--out docs/saliency_check_agreement.json]

The app runs ``medmm.explain.saliency_check.check_saliency`` on every request, sized to stay cheap
(``STEPS`` deletion/insertion steps, ``RANDOM_ORDERS`` random orders, IG with ``AGREEMENT_IG_STEPS`` steps for
Grad-CAM's second opinion). This script explains real films the way the app does (most probable finding, each
image method), runs that check and a full-size one (10 steps, 4 random orders, IG-32), and reports how often the
two verdicts ("better than random?", "does the second method agree?") are the same, the correlation of their
numbers, and what each costs. Films: a fixed random sample of Kermany (children) and ``nih_sample`` (adults).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from medmm.training.data import SHARED_DATA

FULL = {"steps": 10, "random_orders": 4, "ig_steps": 32}


def films(per_source: int, seed: int = 0) -> list[tuple[str, Path]]:
    rng = np.random.default_rng(seed)
    kermany = sorted((SHARED_DATA / "kermany224" / "train").glob("*/*.jpeg"))
    with open(SHARED_DATA / "nih_sample" / "metadata.csv", newline="") as f:
        nih = [SHARED_DATA / "nih_sample" / "images" / r["image"] for r in csv.DictReader(f)]
    out: list[tuple[str, Path]] = []
    for name, pool in (("kermany", kermany), ("nih_sample", nih)):
        out += [(name, pool[i]) for i in sorted(rng.choice(len(pool), min(per_source, len(pool)), replace=False))]
    return out


def run(checkpoint: str, per_source: int, methods: tuple[str, ...], quick: dict | None = None) -> dict:
    from medmm.explain import explain
    from medmm.explain.saliency_check import AGREEMENT_IG_STEPS, RANDOM_ORDERS, STEPS, check_saliency, verdict
    from medmm.pipeline import Pipeline

    quick = {"steps": STEPS, "random_orders": RANDOM_ORDERS, "ig_steps": AGREEMENT_IG_STEPS, **(quick or {})}
    pipe = Pipeline.from_checkpoint(checkpoint)
    rows = []
    for source, path in films(per_source):
        inputs = pipe.prepare([str(path)])
        for method in methods:
            exp = explain(pipe, inputs, method=method)
            t = time.perf_counter()
            small = check_saliency(pipe, inputs, exp, **quick)
            t_quick = time.perf_counter() - t
            t = time.perf_counter()
            full = check_saliency(pipe, inputs, exp, **FULL)
            t_full = time.perf_counter() - t
            rows.append({"source": source, "method": method, "finding": exp.finding,
                         "quick": {**verdict(small), "rho": small["agreement_spearman"],
                                   "deletion_gain": small["deletion_gain"], "s": round(t_quick, 3)},
                         "full": {**verdict(full), "rho": full["agreement_spearman"],
                                  "deletion_gain": full["deletion_gain"], "s": round(t_full, 3)}})
        print(f"{source} {path.name}: done", flush=True)

    def same(key: str, subset: list[dict]) -> dict:
        pairs = [(r["quick"][key], r["full"][key]) for r in subset if None not in (r["quick"][key], r["full"][key])]
        return {"same": sum(a == b for a, b in pairs), "n": len(pairs)}

    summary: dict = {}
    for method in methods:
        sub = [r for r in rows if r["method"] == method]
        finite = [(r["quick"]["rho"], r["full"]["rho"]) for r in sub
                  if np.isfinite(r["quick"]["rho"]) and np.isfinite(r["full"]["rho"])]
        summary[method] = {
            "faithful_verdict": same("faithful", sub), "agree_verdict": same("agree", sub),
            "rho_correlation": float(np.corrcoef(np.array(finite).T)[0, 1]) if len(finite) > 2 else None,
            "deletion_gain_correlation": float(np.corrcoef([r["quick"]["deletion_gain"] for r in sub],
                                                           [r["full"]["deletion_gain"] for r in sub])[0, 1]),
            "quick_s_median": float(np.median([r["quick"]["s"] for r in sub])),
            "full_s_median": float(np.median([r["full"]["s"] for r in sub]))}
    return {"checkpoint": checkpoint, "quick": quick, "full": FULL, "n_films": len(rows) // len(methods), "summary": summary, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    from medmm.explain.methods import METHODS
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--per-source", type=int, default=12, help="films per source (Kermany, nih_sample)")
    ap.add_argument("--methods", default=",".join(METHODS), help="image methods to check (comma-separated)")
    ap.add_argument("--steps", type=int, default=None, help="quick check: deletion/insertion steps (default STEPS)")
    ap.add_argument("--random-orders", type=int, default=None, help="quick check: random orders")
    ap.add_argument("--ig-steps", type=int, default=None, help="quick check: IG steps of Grad-CAM's second opinion")
    ap.add_argument("--out", default=None, help="write the JSON here (default: print the summary only)")
    args = ap.parse_args(argv)
    quick = {k: v for k, v in (("steps", args.steps), ("random_orders", args.random_orders),
                                ("ig_steps", args.ig_steps)) if v is not None}
    res = run(args.checkpoint, args.per_source, tuple(m for m in args.methods.split(",") if m), quick)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("quick", "full", "n_films", "summary")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
