"""Timing a call: percentiles of repeated calls, several variants interleaved so drifting load hits them alike."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

FAST_MIN_REPEATS = 20  # stages of a few ms: at least this many samples whatever --repeats says (cheap)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Seconds -> ``{p50_ms, p95_ms, mean_ms, min_ms, n}`` (linear-interpolated percentiles)."""
    a = np.asarray(samples, dtype=np.float64) * 1000.0
    if a.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "mean_ms": float("nan"), "min_ms": float("nan"), "n": 0}
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3),
            "mean_ms": round(float(a.mean()), 3), "min_ms": round(float(a.min()), 3), "n": int(a.size)}


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; returns the per-call seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def time_fn(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> dict[str, float]:
    return summarize(time_calls(fn, repeats, warmup))


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2) -> dict[str, dict[str, float]]:
    """Time several variants round-robin so that drifting background load hits them all alike.

    Each turn makes one untimed call before the timed one: the first call after a switch pays for the previous
    variant's worker threads still spinning (torch's OpenMP team spins for a while after each op) and for cold
    caches, which a server running one runtime never sees (measured: OpenVINO 5.7 ms right after torch, 3.6 ms on
    its second call)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeats)):
        for k, fn in fns.items():
            fn()  # settle: see the docstring
            t = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t)
    return {k: summarize(v) for k, v in samples.items()}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t
