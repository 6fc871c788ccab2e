"""Where an inference request spends its time: load, preprocess, encoders, head, the whole request and its report draft;
the overhead ratio against the bare backbone, a note's CPU cost, batched throughput."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medmm.tools.bench.copies import fresh_backbone
from medmm.tools.bench.inputs import TYPICAL_NOTES
from medmm.tools.bench.machine import machine_info
from medmm.tools.bench.memory import rss_mb
from medmm.tools.bench.timing import FAST_MIN_REPEATS, time_fn, time_interleaved, timed

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 8, 32)
OVERHEAD_TARGET = 1.3  # issue 15


def load_pipeline(checkpoint: Path, runtime: str | None, result: dict[str, Any]) -> Any:
    """Load the pipeline in this process; machine, checkpoint, runtime and memory facts go into ``result``."""
    from medmm.pipeline import Pipeline

    rss_before = rss_mb()
    pipe, load_s = timed(lambda: Pipeline.from_checkpoint(checkpoint, runtime=runtime))
    result["machine"] = machine_info(pipe.device)
    result["checkpoint"] = {"path": str(checkpoint), "name": pipe.meta.name, "trained": pipe.meta.trained,
                            "image_encoder": pipe.model.image_encoder.name}
    result["runtime"] = "torch" if pipe.runtime is None else pipe.runtime.describe()
    result["memory"] = {"rss_before_load_mb": rss_before, "rss_after_load_mb": rss_mb(),
                        "in_process_load_s": round(load_s, 3)}
    return pipe


def model_stages(pipe: Any, files: dict[str, Path], repeats: int, stages: dict) -> tuple[Any, Any, Any, Any]:
    """Load + preprocess per input kind, the encoders (bare backbone beside the pipeline's), tokenizer, text
    encoder (cold, long, cached) and the fusion head. Returns (bare backbone, one preprocessed 224 px scan, the
    PNG + notes inputs, their prediction)."""
    from medmm.io import load_scan
    from medmm.models.transforms import to_model_input

    prep = pipe.meta.preprocessing
    for kind, path in files.items():
        stages[f"load_scan.{kind}"] = time_fn(lambda p=path: load_scan(p), repeats)
        px = load_scan(path).pixels
        stages[f"preprocess.{kind}"] = time_fn(
            lambda px=px: torch.stack([to_model_input(px, prep)])[None].to(pipe.device), repeats)
    inputs_img = pipe.prepare([files["png"]])
    inputs_mm = pipe.prepare([files["png"]], TYPICAL_NOTES)
    pipe.tokens(inputs_mm)
    bare = fresh_backbone(pipe).to(pipe.device)
    x224 = inputs_img.pixels[0, :1].clone()  # [1, 3, 224, 224], a real preprocessed scan
    enc = time_interleaved({"bare_backbone": lambda: bare(x224),
                            "image_encoder": lambda: (inputs_img.view_cache.clear(), pipe.image_features(inputs_img))}, max(repeats, FAST_MIN_REPEATS))
    stages["bare_backbone"], stages["image_encoder"] = enc["bare_backbone"], enc["image_encoder"]
    te = pipe.model.text_encoder
    if te is not None:
        stages["tokenize"] = time_fn(lambda: te.tokenize([TYPICAL_NOTES]), repeats)
        stages["text_encoder.cold"] = time_fn(
            lambda: pipe.model.encode_text(inputs_mm.input_ids, inputs_mm.attention_mask), repeats)
        tok = te.tokenize([" ".join([TYPICAL_NOTES] * 20)])
        stages[f"text_encoder.cold_{tok['input_ids'].shape[1]}tok"] = time_fn(
            lambda: pipe.model.encode_text(tok["input_ids"], tok["attention_mask"]), max(3, repeats // 2))
        pipe.text_features(inputs_mm)
        stages["text_encoder.cached"] = time_fn(lambda: pipe.text_features(inputs_mm), repeats)
    img_feat, txt_feat = pipe.image_features(inputs_mm), pipe.text_features(inputs_mm)
    stages["fusion_head"] = time_fn(lambda: pipe.calibrate(pipe.model.forward_features(img_feat, txt_feat)), repeats)
    return bare, x224, inputs_mm, pipe.predict_prepared(inputs_mm)


def request_stages(pipe: Any, files: dict[str, Path], bare: Any, x224: Any, inputs_mm: Any, prediction: Any,
                   repeats: int, stages: dict, notes_out: list[str]) -> dict[str, dict[str, float]]:
    """Whole ``Pipeline.predict`` requests per input kind (+ notes) and the report draft; returns the overhead
    ratio's two terms, timed interleaved (drifting background load hits both alike)."""
    fast = max(repeats, FAST_MIN_REPEATS)
    for kind, path in files.items():
        stages[f"whole_request.{kind}"] = time_fn(lambda p=path: pipe.predict([p]), fast)
    stages["whole_request.png+notes"] = time_fn(lambda: pipe.predict([files["png"]], TYPICAL_NOTES), repeats)
    pair = time_interleaved({"bare_backbone": lambda: bare(x224),
                             "whole_request.png": lambda: pipe.predict([files["png"]])}, fast)
    try:
        from medmm.report import draft_report
    except ImportError as e:
        notes_out.append(f"report stage skipped: medmm.report not importable ({e})")
    else:
        stages["report"] = time_fn(lambda: draft_report(prediction, inputs_mm.notes), repeats)
    return pair


def notes_cpu_cost(pipe: Any, path: Path, repeats: int) -> dict[str, float]:
    """CPU milliseconds (process time, both cores counted) a note adds to ``Pipeline.predict``: the same film
    with and without a note, interleaved, a new note every call (``TYPICAL_NOTES`` + a counter, so no cache helps);
    medians, and the reader + evidence alone (``medmm.notes``). The notes' sentence embedding is not part of it:
    only a drafted report's sentence ranking computes it (the ``report`` stage of a service request)."""
    from medmm.notes import combine, read_note

    for _ in range(2):
        pipe.predict([path]), pipe.predict([path], TYPICAL_NOTES)
    alone, noted, reader = [], [], []
    for i in range(repeats):
        t = time.process_time()
        pipe.predict([path])
        alone.append(time.process_time() - t)
        note = f"{TYPICAL_NOTES} Day {i}."
        t = time.process_time()
        pipe.predict([path], note)
        noted.append(time.process_time() - t)
        t = time.process_time()
        combine(read_note(note), None, note)
        reader.append(time.process_time() - t)
    med = lambda xs: round(1000 * float(np.median(xs)), 2)  # noqa: E731
    return {"image_only_cpu_ms": med(alone), "image_plus_new_note_cpu_ms": med(noted),
            "note_cpu_ms": round(med(noted) - med(alone), 2), "reader_and_evidence_cpu_ms": med(reader),
            "target_ms": 15.0, "n": repeats}


def overhead(result: dict[str, Any], stages: dict, pair: dict, runtime_name: str) -> None:
    """``overhead_ratio`` (whole image-only request / bare backbone, interleaved) and the same ratio by input."""
    bare_p50 = stages["bare_backbone"]["p50_ms"]
    result["overhead_ratio"] = round(pair["whole_request.png"]["p50_ms"] / pair["bare_backbone"]["p50_ms"], 3)
    result["overhead_ratio_terms"] = {**pair, "what": "whole image-only Pipeline.predict on the 1024^2 PNG "
                                      "(pipeline runtime: " + runtime_name + ") / bare timm backbone (torch, "
                                      "NCHW, batch 1, 224 px), p50, interleaved in this run"}
    result["overhead_ratio_by_input"] = {k[len("whole_request."):]: round(v["p50_ms"] / bare_p50, 3)
                                         for k, v in stages.items() if k.startswith("whole_request.")}
    result["overhead_target"] = OVERHEAD_TARGET


def throughput(pipe: Any, x224: torch.Tensor, batch_sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Images/s through ``encode_images`` + fusion/head + calibration at each batch size (one view per image)."""
    out: dict[str, Any] = {}
    with torch.inference_mode():
        for b in batch_sizes:
            batch = x224.expand(b, -1, -1, -1).contiguous()[:, None]  # [B, 1, 3, S, S]

            encode = pipe.runtime.encode_images if pipe.runtime is not None else pipe.model.encode_images

            def step(batch: torch.Tensor = batch, encode: Callable[[torch.Tensor], torch.Tensor] = encode) -> torch.Tensor:
                return pipe.calibrate(pipe.model.forward_features(encode(batch), None))

            iters = max(2, math.ceil(repeats * 4 / b))
            s = time_fn(step, iters, warmup=1)
            out[f"batch_{b}"] = {"images_per_s": round(b / (s["p50_ms"] / 1000), 2), "batch_p50_ms": s["p50_ms"],
                                 "batch_p95_ms": s["p95_ms"], "n": s["n"]}
    return out
