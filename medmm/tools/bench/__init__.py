"""``python -m medmm bench``: where an inference request spends its time, on this machine, in one run.

What is measured (all with ``torch.inference_mode()`` after warm-up; p50/p95 over ``--repeats`` calls):

* machine: CPU model, cores, torch threads, torch version, device, load average (contention shows up here);
* cold start in a fresh subprocess: ``import medmm.pipeline``, ``Pipeline.from_checkpoint``, first request;
* per stage: load scan (PNG / JPEG / DICOM), preprocess, image encoder, tokenizer, text encoder (cache
  bypassed and cached), fusion + head, explanation per method, report draft, the whole image-only
  ``Pipeline.predict`` request per input kind, and ``service.run_request`` (the CLI/app path);
* the bare backbone (a fresh timm model of the same architecture, batch 1, 224 px) in the same run, so
  ``overhead_ratio`` = whole image-only request p50 (PNG) / bare backbone p50 is comparable across machines;
* throughput through image encoder + head at batch 1 / 8 / 32; peak RSS;
* experiments on copies of the model (never the pipeline itself): thread counts, channels_last, BatchNorm
  folding, int8 dynamic quantisation of the text encoder, each with its numeric difference to the fp32 output.

Why a single process: stage numbers from separate runs are not comparable on a shared machine; the ratio is.

Where each part lives: ``run`` (``run_bench``, ``cli_bench``) calls, in order, ``inputs`` (the films and a
typical note), ``machine`` and ``memory`` (what it ran on, RSS), ``startup`` (cold start), ``request`` (the
request's stages, the overhead ratio, a note's CPU cost, throughput), ``service_request`` (the metered service
path: time and energy), ``explanations``, ``runtimes`` (runtimes side by side) and ``speedups`` (experiments);
``copies`` makes the copies of the model and the pipeline they time, ``timing`` times calls, ``report`` formats
the result as a table.
"""

from medmm.tools.bench.copies import fold_batchnorm, fresh_backbone
from medmm.tools.bench.explanations import (EXPLAIN_METHODS, EXPLAIN_MIN_REPEATS, EXPLAIN_TARGETS_MS,
                                            explanation_summary)
from medmm.tools.bench.inputs import TYPICAL_NOTES, bench_inputs
from medmm.tools.bench.machine import cpu_model, machine_info
from medmm.tools.bench.memory import peak_rss_mb, rss_mb
from medmm.tools.bench.report import format_table
from medmm.tools.bench.request import BATCH_SIZES, OVERHEAD_TARGET, notes_cpu_cost
from medmm.tools.bench.run import cli_bench, run_bench
from medmm.tools.bench.runtimes import bench_runtimes, runtime_pipelines
from medmm.tools.bench.speedups import OMP_VARIANTS, experiments, omp_env_experiment
from medmm.tools.bench.startup import REPO_ROOT, cold_start
from medmm.tools.bench.timing import FAST_MIN_REPEATS, summarize, time_calls, time_fn, time_interleaved

__all__ = [
    "BATCH_SIZES", "EXPLAIN_METHODS", "EXPLAIN_MIN_REPEATS", "EXPLAIN_TARGETS_MS", "FAST_MIN_REPEATS",
    "OMP_VARIANTS", "OVERHEAD_TARGET", "REPO_ROOT", "TYPICAL_NOTES", "bench_inputs", "bench_runtimes",
    "cli_bench", "cold_start", "cpu_model", "experiments", "explanation_summary", "fold_batchnorm",
    "format_table", "fresh_backbone", "machine_info", "notes_cpu_cost", "omp_env_experiment", "peak_rss_mb",
    "rss_mb", "run_bench", "runtime_pipelines", "summarize", "time_calls", "time_fn", "time_interleaved",
]
