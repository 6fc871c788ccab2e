"""Experiments on copies of the model: channels_last, BatchNorm folding, thread counts, OpenMP settings, int8 text encoder."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from medmm.tools.bench.copies import fold_batchnorm, pipeline_with_backbone
from medmm.tools.bench.inputs import TYPICAL_NOTES
from medmm.tools.bench.timing import summarize, time_fn, time_interleaved

_OMP_CHILD_CODE = r"""
import json, sys, time, torch, timm
m = timm.create_model(sys.argv[1], pretrained=False, num_classes=0).eval()
x = torch.randn(1, 3, 224, 224)
out = []
with torch.inference_mode():
    for _ in range(3):
        m(x)
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter(); m(x); out.append(time.perf_counter() - t)
print(json.dumps({"threads": torch.get_num_threads(), "samples": out}))
"""
OMP_VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
}


def omp_env_experiment(arch: str, repeats: int, rounds: int = 2) -> dict[str, Any]:
    """Bare backbone p50 in child processes under OpenMP settings that only take effect at start-up.

    Why: on a shared CPU, OpenMP threads that spin-wait at barriers (libgomp's default) lose their time slice to
    other processes and a 2-thread forward can be many times slower than a 1-thread one. Rounds alternate the
    variants so that background load drifts hit them alike.
    """
    samples: dict[str, list[float]] = {k: [] for k in OMP_VARIANTS}
    threads: dict[str, int] = {}
    for _ in range(rounds):
        for name, extra in OMP_VARIANTS.items():
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
            env.update(extra)
            try:
                proc = subprocess.run([sys.executable, "-c", _OMP_CHILD_CODE, arch, str(repeats)], env=env,
                                      capture_output=True, text=True, timeout=600)
                got = json.loads(proc.stdout.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
                return {"error": f"{type(e).__name__}: {e}"}
            samples[name] += got["samples"]
            threads[name] = got["threads"]
    return {name: {**summarize(v), "threads": threads.get(name)} for name, v in samples.items()}


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _with_threads(n: int, fn: Callable[[], Any]) -> Any:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


def experiments(pipeline: Any, bare: nn.Module, png: Path, repeats: int) -> dict[str, Any]:
    """Candidate speed-ups, timed side by side on copies (the pipeline is never modified)."""
    with torch.no_grad():  # build copies outside inference_mode (quantisation and folding make new parameters)
        return _experiments(pipeline, bare, png, repeats)


@torch.no_grad()
def _experiments(pipeline: Any, bare: nn.Module, png: Path, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    backbone = copy.deepcopy(pipeline.model.image_encoder.model).eval()
    cl = copy.deepcopy(backbone).to(memory_format=torch.channels_last)
    folded = fold_batchnorm(backbone)
    folded_cl = copy.deepcopy(folded).to(memory_format=torch.channels_last)
    ref = backbone(x)
    variants = {"nchw": lambda: backbone(x), "channels_last": lambda: cl(x_cl),
                "bn_folded": lambda: folded(x), "bn_folded_channels_last": lambda: folded_cl(x_cl)}
    out["backbone_variants"] = time_interleaved(variants, repeats)
    out["backbone_variants_max_abs_diff"] = {"channels_last": _max_abs(cl(x_cl), ref), "bn_folded": _max_abs(folded(x), ref),
                                             "bn_folded_channels_last": _max_abs(folded_cl(x_cl), ref)}
    base = out["backbone_variants"]["nchw"]["p50_ms"]
    out["backbone_variants_speedup"] = {k: round(base / v["p50_ms"], 2) for k, v in out["backbone_variants"].items()}

    # the whole image-only request with the proposed backbone changes, on a copy of the pipeline
    variants_req = {"as_shipped": pipeline, "bn_folded": pipeline_with_backbone(pipeline, folded),
                    "bn_folded_channels_last": pipeline_with_backbone(pipeline, folded_cl)}
    req = time_interleaved({k: (lambda p=p: p.predict([png])) for k, p in variants_req.items()}, repeats)
    bare_p50 = time_fn(lambda: bare(x), repeats)["p50_ms"]
    out["whole_request_png_variants"] = req
    out["whole_request_png_variants_overhead_ratio"] = {k: round(v["p50_ms"] / bare_p50, 3) for k, v in req.items()}
    ref_probs = pipeline.predict([png]).findings
    out["whole_request_png_variants_max_prob_diff"] = {
        k: max(abs(p.predict([png]).findings[f] - ref_probs[f]) for f in ref_probs) for k, p in variants_req.items()}
    del variants_req

    # intra-op threads: 1 vs every usable core (contention makes the many-thread case slow: barrier waits)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads: dict[str, Any] = {}
    for n in sorted({1, max(1, cores // 2), cores}):
        res = _with_threads(n, lambda: time_interleaved({"bare_backbone": lambda: bare(x),
                                                         "whole_request_png": lambda: pipeline.predict([png])},
                                                        repeats))
        res["overhead_ratio"] = round(res["whole_request_png"]["p50_ms"] / res["bare_backbone"]["p50_ms"], 3)
        threads[str(n)] = res
    out["threads"] = threads
    out["omp_env_bare_backbone"] = omp_env_experiment(pipeline.model.image_encoder.name, repeats)

    # int8 dynamic quantisation of the text encoder's Linear layers (the image encoder is conv-only)
    te = pipeline.model.text_encoder
    if te is not None:
        try:
            from torch.ao.quantization import quantize_dynamic

            q_model = quantize_dynamic(copy.deepcopy(te.model), {nn.Linear}, dtype=torch.qint8)
            tok = te.tokenize([TYPICAL_NOTES])

            def embed(m: nn.Module) -> torch.Tensor:
                h = m(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
                mask = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
                return nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)

            res = time_interleaved({"fp32": lambda: embed(te.model), "int8_dynamic": lambda: embed(q_model)}, repeats)
            res["cosine_int8_vs_fp32"] = round(float((embed(te.model) * embed(q_model)).sum()), 5)
            out["text_encoder_int8"] = res
        except Exception as e:  # noqa: BLE001 - an optional experiment must not fail the bench
            out["text_encoder_int8"] = {"error": f"{type(e).__name__}: {e}"}
    return out
