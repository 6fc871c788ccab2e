"""One bench run in this process (``run_bench``) and the ``python -m medmm bench`` entry point (``cli_bench``)."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from medmm.training.data import SHARED_DATA
from medmm.tools.bench.explanations import EXPLAIN_METHODS, explain_stages, explanation_summary
from medmm.tools.bench.inputs import bench_inputs
from medmm.tools.bench.machine import contention
from medmm.tools.bench.memory import peak_rss_mb, rss_mb
from medmm.tools.bench.report import format_table
from medmm.tools.bench.request import (BATCH_SIZES, load_pipeline, model_stages, notes_cpu_cost, overhead,
                                       request_stages, throughput)
from medmm.tools.bench.runtimes import bench_runtimes
from medmm.tools.bench.service_request import service_stage
from medmm.tools.bench.speedups import experiments
from medmm.tools.bench.startup import cold_start
from medmm.tools.bench.timing import FAST_MIN_REPEATS

log = logging.getLogger(__name__)


def run_bench(checkpoint: str | Path | None = None, repeats: int = 20, *, cold: bool = True,
              explain_methods: Sequence[str] = EXPLAIN_METHODS, explain_repeats: int | None = None,
              batch_sizes: Sequence[int] = BATCH_SIZES, run_experiments: bool = True,
              threads: int | None = None, runtime: str | None = None,
              compare_runtimes: bool = True) -> dict[str, Any]:
    """Run every stage once in this process and return the result dict (see the docstring of ``medmm.tools.bench``)."""
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT

    if threads:
        torch.set_num_threads(threads)
    checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
    t_all = time.perf_counter()
    notes_out: list[str] = []
    result: dict[str, Any] = {"schema": "medmm-bench/1", "repeats": repeats}
    tmp = tempfile.TemporaryDirectory(prefix="medmm-bench-")
    try:
        files, input_notes = bench_inputs(Path(tmp.name))
        notes_out += input_notes
        result["inputs"] = {k: (str(v) if str(v).startswith(str(SHARED_DATA)) else f"generated:{v.name}")
                            for k, v in files.items()}
        pipe = load_pipeline(checkpoint, runtime, result)
        if cold:
            log.info("cold start (subprocess)")
            result["cold_start"] = cold_start(checkpoint, files["png"], threads=threads, runtime=runtime)
        stages: dict[str, dict[str, float]] = {}
        with torch.inference_mode():
            bare, x224, inputs_mm, prediction = model_stages(pipe, files, repeats, stages)
            pair = request_stages(pipe, files, bare, x224, inputs_mm, prediction, repeats, stages, notes_out)
            result["notes_cost"] = notes_cpu_cost(pipe, files["png"], max(repeats, 10))
        service_stage(pipe, files, repeats, stages, result, notes_out)
        # explanations (gradients: outside inference_mode, explain() handles it)
        ex_stages = explain_stages(pipe, inputs_mm, prediction, explain_methods,
                                   explain_repeats or max(1, min(3, repeats // 5)), notes_out)
        ex_facts = ex_stages.pop("_facts", {})
        stages.update(ex_stages)
        if ex_stages:
            result["explanations"] = explanation_summary(ex_stages, ex_facts)
        result["throughput"] = throughput(pipe, x224, batch_sizes, repeats)  # image encoder + head, batched
        if compare_runtimes:
            log.info("runtimes side by side")
            result["runtimes"] = bench_runtimes(pipe, files, max(repeats, FAST_MIN_REPEATS))
        result["stages"] = stages
        overhead(result, stages, pair, pipe.runtime_name)
        result["memory"]["rss_end_mb"] = rss_mb()
        result["memory"]["peak_rss_mb"] = peak_rss_mb()  # before the experiments' model copies
        if run_experiments:
            log.info("experiments")
            result["experiments"] = experiments(pipe, bare, files["png"], repeats)
            result["memory"]["peak_rss_incl_experiments_mb"] = peak_rss_mb()
        contention(result, notes_out)
    finally:
        tmp.cleanup()
    result["bench_wall_s"] = round(time.perf_counter() - t_all, 1)
    result["notes"] = notes_out
    return result


def cli_bench(args: Any) -> int:
    """Entry point of ``python -m medmm bench``. Optional attributes read with defaults (not all are CLI flags):
    ``no_cold``, ``no_explain``, ``no_experiments``, ``threads``, ``explain_repeats``."""
    result = run_bench(
        args.checkpoint, max(1, int(getattr(args, "repeats", 20) or 20)),
        cold=not getattr(args, "no_cold", False),
        explain_methods=() if getattr(args, "no_explain", False) else EXPLAIN_METHODS,
        explain_repeats=getattr(args, "explain_repeats", None),
        run_experiments=not getattr(args, "no_experiments", False),
        threads=getattr(args, "threads", None),
        runtime=getattr(args, "runtime", None),
        compare_runtimes=not getattr(args, "no_runtimes", False),
    )
    text = json.dumps(result, indent=2, default=float)
    if getattr(args, "out", None):
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text if getattr(args, "json", False) else format_table(result))
    return 0
