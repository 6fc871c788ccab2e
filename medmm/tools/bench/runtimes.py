"""Every installed runtime (torch, ONNX Runtime, OpenVINO) side by side, and its agreement with torch."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medmm.tools.bench.copies import own_caches
from medmm.tools.bench.inputs import TYPICAL_NOTES
from medmm.tools.bench.timing import time_interleaved


def runtime_pipelines(pipeline: Any, names: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """``{runtime: pipeline}`` sharing ``pipeline``'s model (shallow copies with their own caches), one per
    installed runtime; plus ``{runtime: error}`` for those that failed to build. ``openvino-int8`` is listed when
    its int8 image encoder is cached (the bench never quantises: ``scripts/int8_check.py`` or ``medmm warmup
    --runtime openvino-int8`` builds it); otherwise its error says so."""
    from medmm import runtime as rt

    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in names or rt.available():
        try:
            enc = rt.build(name, pipeline.model, pipeline.meta, pipeline.device, quantise=False)
        except Exception as e:  # noqa: BLE001 - one runtime failing must not sink the bench
            errors[name] = f"{type(e).__name__}: {e}"
            continue
        clone = own_caches(copy.copy(pipeline))
        clone.runtime = None if enc.name == "torch" else enc
        out[name] = clone
    return out, errors


def bench_runtimes(pipeline: Any, files: dict[str, Path], repeats: int, notes: str = TYPICAL_NOTES) -> dict[str, Any]:
    """Every installed runtime side by side, interleaved in one run: image encoder (batch 1 and 8), text
    encoder (cache bypassed), whole image-only PNG request; max |delta p| and |delta feature| against torch over
    every bench input with and without notes."""
    pipes, errors = runtime_pipelines(pipeline)
    if "torch" not in pipes:
        return {"error": f"torch pipeline unavailable: {errors}"}
    with torch.inference_mode():
        inputs = {name: p.prepare([files["png"]], notes) for name, p in pipes.items()}
        x8 = inputs["torch"].pixels[0].expand(8, -1, -1, -1).contiguous()[:, None]  # [8, 1, 3, S, S]

        def image(p: Any, inp: Any) -> Callable[[], Any]:
            return lambda: (inp.view_cache.clear(), p.image_features(inp))  # encode every time, not the cached copy

        def image8(p: Any) -> Callable[[], Any]:
            return (lambda: p.runtime.encode_images(x8)) if p.runtime is not None else (lambda: p.model.encode_images(x8))

        def text(p: Any, inp: Any) -> Callable[[], Any]:
            p.tokens(inp)
            if p.runtime is not None and p.runtime.text is not None:
                return lambda: p.runtime.encode_text(inp.input_ids, inp.attention_mask)
            return lambda: p.model.encode_text(inp.input_ids, inp.attention_mask)

        img = time_interleaved({n: image(p, inputs[n]) for n, p in pipes.items()}, repeats)
        img8 = time_interleaved({n: image8(p) for n, p in pipes.items()}, max(3, repeats // 4), warmup=1)
        txt = {}
        if pipeline.model.text_encoder is not None:
            txt = time_interleaved({n: text(p, inputs[n]) for n, p in pipes.items()}, repeats)
        req = time_interleaved({n: (lambda p=p: p.predict([files["png"]])) for n, p in pipes.items()}, repeats)

        refs = {(kind, with_notes): pipes["torch"].predict([path], notes if with_notes else None)
                for kind, path in files.items() for with_notes in (False, True)}
        out: dict[str, Any] = {}
        torch_p50 = img["torch"]["p50_ms"]
        for name, p in pipes.items():
            dp = dfeat = 0.0
            for (kind, with_notes), ref in refs.items():
                got = p.predict([files[kind]], notes if with_notes else None)
                dp = max(dp, max(abs(got.findings[f] - ref.findings[f]) for f in ref.findings))
                dfeat = max(dfeat, float(np.abs(got.image_embedding - ref.image_embedding).max()))
                if with_notes:           # the notes' sentence embedding (the draft report's ranking)
                    a = p.notes_embedding(p.prepare([files[kind]], notes))
                    b = pipes["torch"].notes_embedding(pipes["torch"].prepare([files[kind]], notes))
                    dfeat = max(dfeat, float(np.abs(a - b).max()))
            out[name] = {
                "p50_ms": img[name]["p50_ms"], "p95_ms": img[name]["p95_ms"],
                "ratio_vs_torch": round(img[name]["p50_ms"] / torch_p50, 3),
                "max_abs_dp_vs_torch": dp, "max_abs_dfeature_vs_torch": dfeat,
                "image_encoder": img[name], "image_encoder_batch8": img8[name],
                "text_encoder": txt.get(name), "whole_request.png": req[name],
                "providers": ["torch:" + str(p.device)] if p.runtime is None else p.runtime.providers,
            }
            if p.runtime is not None and p.runtime.reference is not None:   # openvino-int8: which model, verdict
                from medmm.runtime.int8 import describe

                out[name]["int8"] = describe(Path(p.runtime.files["image_encoder"]))
    fastest = min(out, key=lambda n: out[n]["p50_ms"])
    return {"by_runtime": out, "fastest": fastest, "errors": errors, "compared_inputs": len(refs),
            "what": "p50/p95 = image encoder, batch 1, one 224 px view (Pipeline.image_features); "
                    "max_abs_dp_vs_torch over every bench input with and without notes"}
