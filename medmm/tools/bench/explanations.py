"""Explanation latency per method on an image + notes request, against the issue-15 targets."""

from __future__ import annotations

import time
from typing import Any, Sequence

from medmm.explain.methods import METHODS
from medmm.tools.bench.timing import summarize

EXPLAIN_METHODS = METHODS  # medmm.explain.methods
EXPLAIN_MIN_REPEATS = {"gradcam": 5, "ig": 3, "occlusion": 3}  # quick mode still gets a median, not one sample
EXPLAIN_TARGETS_MS = {"explanation.gradcam": 150.0, "explanation.ig": 1000.0, "explanation.occlusion": 1000.0}


def explain_stages(pipe: Any, inputs: Any, prediction: Any, methods: Sequence[str], repeats: int,
                   notes_out: list[str]) -> dict[str, dict[str, float]]:
    """``explain`` per method on an image+notes request; also the image-map part alone (``timings_s['image_s']``)."""
    try:
        from medmm.explain.attribution import explain
    except ImportError as e:
        notes_out.append(f"explanation stages skipped: medmm.explain not importable ({e})")
        return {}
    out: dict[str, dict[str, float]] = {}
    finding = "Pneumonia" if "Pneumonia" in pipe.findings else None
    try:
        explain(pipe, inputs, prediction, finding=finding, method="gradcam")  # warm-up: captum import, autograd
    except Exception as e:  # noqa: BLE001
        notes_out.append(f"explanation stages skipped: explain() failed: {type(e).__name__}: {e}")
        return {}
    facts: dict[str, Any] = {}
    for method in methods:
        totals, image_parts, token_parts = [], [], []
        name = f"explanation.{method}"
        n = max(repeats, EXPLAIN_MIN_REPEATS.get(method, 1))
        try:
            for _ in range(n):
                t = time.perf_counter()
                exp = explain(pipe, inputs, prediction, finding=finding, method=method)
                totals.append(time.perf_counter() - t)
                image_parts.append(float(exp.timings_s.get("image_s", float("nan"))))
                token_parts.append(float(exp.timings_s.get("tokens_s", float("nan"))))
        except Exception as e:  # noqa: BLE001
            notes_out.append(f"{name} failed: {type(e).__name__}: {e}")
            continue
        out[name] = summarize(totals)
        out[f"{name}.image_map_only"] = summarize(image_parts)
        out[f"{name}.tokens_only"] = summarize(token_parts)
        if "ig_completeness" in exp.sanity:
            facts[f"{method}_completeness_relative_error"] = exp.sanity["ig_completeness"]["relative_error"]
        if method == "occlusion":
            facts["occlusion_geometry"] = exp.sanity.get("occlusion")
            facts["occlusion_forward"] = pipe.runtime_name
    out["_facts"] = facts  # popped by run_bench into result["explanations"]
    return out


def explanation_summary(stages: dict[str, dict[str, float]], facts: dict[str, Any]) -> dict[str, Any]:
    """``explanations``: p50/p95 per method on an image + notes request, against the issue-15 targets."""
    out: dict[str, Any] = {}
    for key, s in stages.items():
        if key.startswith("explanation.") and "." not in key[len("explanation."):]:
            target = EXPLAIN_TARGETS_MS.get(key)
            out[key[len("explanation."):]] = {"p50_ms": s["p50_ms"], "p95_ms": s["p95_ms"], "n": s["n"],
                                              "target_ms": target,
                                              "within_target": None if target is None else s["p50_ms"] <= target}
    out.update(facts)
    out["what"] = ("explain() on an image + notes request (PNG + typical notes, finding Pneumonia): image map, note "
                   "words (each concept's effect through its likelihood ratio), modality contributions; no sanity "
                   "checks")
    return out
