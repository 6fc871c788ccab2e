"""The readable report of a ``run_bench`` result (the JSON is the result itself)."""

from __future__ import annotations

from typing import Any


def format_table(r: dict[str, Any]) -> str:
    """Readable report of a ``run_bench`` result."""
    m = r["machine"]
    lines = [f"medmm bench  (checkpoint {r['checkpoint']['name']}, trained={r['checkpoint']['trained']})",
             f"machine: {m['cpu_model']}, {m['cpus_usable']}/{m['cpu_count']} CPUs, torch {m['torch_version']} "
             f"({m['torch_threads']} threads), device {m['device']}, load avg {m['loadavg_1m_start']} -> "
             f"{m.get('loadavg_1m_end')}{'  [CONTENDED]' if m.get('contended') else ''}"]
    cs = r.get("cold_start")
    if cs:
        if "error" in cs:
            lines.append(f"cold start: {cs['error']}")
        else:
            lines.append(f"cold start: import {cs['import_s']:.2f} s + checkpoint {cs['checkpoint_load_s']:.2f} s = "
                         f"ready {cs['ready_s']:.2f} s; first request {cs['first_request_s']:.2f} s; "
                         f"process {cs['process_wall_s']:.2f} s")
    lines += ["", f"{'stage':<40} {'p50 ms':>10} {'p95 ms':>10} {'n':>4}"]
    for name, s in r["stages"].items():
        lines.append(f"{name:<40} {s['p50_ms']:>10.2f} {s['p95_ms']:>10.2f} {s['n']:>4}")
    lines += ["", "throughput (image encoder + head):"]
    for k, v in r["throughput"].items():
        lines.append(f"  {k:<10} {v['images_per_s']:>8.1f} images/s   (batch p50 {v['batch_p50_ms']:.1f} ms)")
    rts = r.get("runtimes") or {}
    if "by_runtime" in rts:
        lines += ["", f"runtimes (image encoder batch 1; pipeline under test: {_runtime_name(r)}; fastest: {rts['fastest']}):"]
        for name, v in rts["by_runtime"].items():
            txt = v.get("text_encoder") or {}
            lines.append(f"  {name:<12} p50 {v['p50_ms']:7.2f} ms  p95 {v['p95_ms']:7.2f} ms  x{v['ratio_vs_torch']:.2f} of torch"
                         f"  batch8 p50 {v['image_encoder_batch8']['p50_ms']:7.2f} ms  text p50 {txt.get('p50_ms', float('nan')):6.2f} ms"
                         f"  whole PNG p50 {v['whole_request.png']['p50_ms']:7.2f} ms  max|dp| {v['max_abs_dp_vs_torch']:.1e}")
        for name, err in rts.get("errors", {}).items():
            lines.append(f"  {name:<12} unavailable: {err}")
    mem = r["memory"]
    lines += ["", f"memory: RSS after load {mem['rss_after_load_mb']} MB, end {mem['rss_end_mb']} MB, "
              f"peak {mem['peak_rss_mb']} MB"]
    ok = "OK" if r["overhead_ratio"] <= r["overhead_target"] else "ABOVE TARGET"
    lines.append(f"overhead_ratio (whole PNG request / bare backbone, p50): {r['overhead_ratio']:.2f} "
                 f"(target <= {r['overhead_target']:g}: {ok}); by input: "
                 + ", ".join(f"{k} {v:.2f}" for k, v in r["overhead_ratio_by_input"].items()))
    ex = r.get("experiments")
    if ex:
        lines += ["", "experiments (copies of the model):"]
        for k, v in ex["backbone_variants"].items():
            lines.append(f"  backbone {k:<26} p50 {v['p50_ms']:8.2f} ms  x{ex['backbone_variants_speedup'][k]:.2f}"
                         f"  max|diff| {ex['backbone_variants_max_abs_diff'].get(k, 0.0):.1e}")
        for k, v in ex["whole_request_png_variants"].items():
            lines.append(f"  whole PNG request, {k:<24} p50 {v['p50_ms']:8.2f} ms  overhead_ratio "
                         f"{ex['whole_request_png_variants_overhead_ratio'][k]:.2f}  max|dprob| "
                         f"{ex['whole_request_png_variants_max_prob_diff'][k]:.1e}")
        for n, v in ex["threads"].items():
            lines.append(f"  threads={n:<3} bare backbone p50 {v['bare_backbone']['p50_ms']:8.2f} ms, "
                         f"whole PNG request p50 {v['whole_request_png']['p50_ms']:8.2f} ms, ratio {v['overhead_ratio']:.2f}")
        for k, v in ex.get("omp_env_bare_backbone", {}).items():
            if isinstance(v, dict):
                lines.append(f"  subprocess {k:<26} ({v['threads']} threads) bare backbone p50 {v['p50_ms']:8.2f} ms")
        q = ex.get("text_encoder_int8", {})
        if "fp32" in q:
            lines.append(f"  text encoder fp32 p50 {q['fp32']['p50_ms']:.2f} ms, int8 dynamic {q['int8_dynamic']['p50_ms']:.2f}"
                         f" ms, cosine {q['cosine_int8_vs_fp32']}")
        elif q:
            lines.append(f"  text encoder int8: {q.get('error')}")
    if r.get("notes"):
        lines += ["", "notes:"] + [f"  - {n}" for n in r["notes"]]
    lines.append(f"(bench wall {r['bench_wall_s']} s)")
    return "\n".join(lines)


def _runtime_name(r: dict[str, Any]) -> str:
    rt = r.get("runtime")
    return rt if isinstance(rt, str) else (rt or {}).get("name", "?")
