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
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from medmm.training.data import SHARED_DATA
from medmm.explain.methods import METHODS

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BATCH_SIZES = (1, 8, 32)
EXPLAIN_METHODS = METHODS  # medmm.explain.methods
TYPICAL_NOTES = ("58-year-old with fever, productive cough and right basal crackles for three days; "
                 "SpO2 91% on room air. Rule out pneumonia.")
OVERHEAD_TARGET = 1.3  # issue 15


# ============================================================================================ timing helpers
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


def rss_mb() -> float | None:
    """Current resident set size of this process (Linux /proc), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak RSS of this process so far (``ru_maxrss`` is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


# ============================================================================================ machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers were measured on; the load average tells a quiet machine from a shared one."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        affinity = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "loadavg_1m_start": round(load[0], 2),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "env": {k: os.environ[k] for k in _THREAD_ENV if k in os.environ},
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "MALLOC_ARENA_MAX",
               "MEDMM_TORCH_THREADS")

# ============================================================================================ OpenMP env
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


# ============================================================================================ cold start
_COLD_START_CODE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
t_torch = time.perf_counter()
if int(sys.argv[3]) > 0:
    torch.set_num_threads(int(sys.argv[3]))
from medmm.pipeline import Pipeline
t_import = time.perf_counter()
pipe = Pipeline.from_checkpoint(sys.argv[1])
t_load = time.perf_counter()
with torch.inference_mode():
    pipe.predict([sys.argv[2]])
t_first = time.perf_counter()
with torch.inference_mode():
    pipe.predict([sys.argv[2]])
t_second = time.perf_counter()
print(json.dumps({"import_torch_s": t_torch - t0, "import_medmm_s": t_import - t_torch,
                  "checkpoint_load_s": t_load - t_import, "first_request_s": t_first - t_load,
                  "second_request_s": t_second - t_first,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def cold_start(checkpoint: str | Path, scan: str | Path, timeout_s: float = 600.0, threads: int | None = None,
               runtime: str | None = None) -> dict[str, Any]:
    """Import + checkpoint load + first request in a fresh interpreter (OS file cache warm, as on a restart).

    The child uses ``threads`` intra-op threads when given (as the parent does with ``--threads``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if runtime:
        env["MEDMM_RUNTIME"] = runtime  # the child's Pipeline.from_checkpoint reads it
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _COLD_START_CODE, str(checkpoint), str(scan),
                               str(threads or 0)], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"cold start took longer than {timeout_s:.0f} s"}
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"cold-start subprocess failed (exit {proc.returncode}): {tail}"}
    out = {k: round(v, 3) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    out["process_wall_s"] = round(wall, 3)  # includes interpreter start-up and exit
    out["import_s"] = round(out["import_torch_s"] + out["import_medmm_s"], 3)
    out["ready_s"] = round(out["import_s"] + out["checkpoint_load_s"], 3)  # what a server waits before serving
    return out


# ============================================================================================ inputs
def bench_inputs(workdir: Path) -> tuple[dict[str, Path], list[str]]:
    """Files for the load/predict stages: real ones from ../shared/data when present, else generated.

    ``png``: an 8-bit 1024x1024 PNG (a real radiograph re-encoded when the shared DICOM exists), ``jpeg``:
    a 224x224 Kermany JPEG, ``dicom``: an uncompressed 1024x1024 DX without a VOI window (min-max path),
    ``dicom_jpeg``: a JPEG Baseline CR with a window.
    """
    from PIL import Image

    notes: list[str] = []
    files: dict[str, Path] = {}
    dx = SHARED_DATA / "dicom" / "nhsx_nih_dx.dcm"
    siim = SHARED_DATA / "dicom" / "txv_siim.dcm"
    kermany = SHARED_DATA / "kermany224" / "train" / "NORMAL"
    if dx.exists():
        from medmm.io import load_scan

        pixels = load_scan(dx).pixels
        files["dicom"] = dx
        notes.append("png = the shared NIH DX radiograph re-encoded as an 8-bit PNG")
    else:
        pixels = _phantom(1024)
        files["dicom"] = workdir / "generated.dcm"
        files["dicom"].write_bytes(_dicom_bytes((pixels * 4095).astype(np.uint16)))
        notes.append("../shared/data absent: PNG and DICOM are generated phantoms")
    files["png"] = workdir / "scan.png"
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(files["png"])
    jpegs = sorted(kermany.glob("*.jpeg"))[:1] if kermany.exists() else []
    if jpegs:
        files["jpeg"] = jpegs[0]
    if siim.exists():
        files["dicom_jpeg"] = siim
    return files, notes


def _phantom(size: int, seed: int = 0) -> np.ndarray:
    """A smooth chest-like float image in [0, 1] with noise (not flat, so no blank-image refusal)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.55 + 0.3 * np.cos(3 * (xx - 0.5)) * np.cos(2 * (yy - 0.5)) - 0.25 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) * 20)
    img -= 0.25 * np.exp(-((xx - 0.7) ** 2 + (yy - 0.5) ** 2) * 20)
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32)


def _dicom_bytes(arr: np.ndarray, **attrs: Any) -> bytes:
    """A minimal uncompressed DX DICOM of ``arr`` (pydicom)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    bits = 16 if arr.dtype == np.uint16 else 8
    ds.set_pixel_data(arr, "MONOCHROME2", 12 if bits == 16 else 8)
    for k, v in attrs.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# ============================================================================================ model experiments
def fresh_backbone(pipeline: Any) -> nn.Module:
    """A new timm model of the pipeline's architecture (contiguous NCHW, eval), with its weights when they fit.

    Independent of whatever the pipeline does to its own copy (channels_last, folding), so the ratio's
    denominator stays "the timm model alone".
    """
    import timm

    enc = pipeline.model.image_encoder
    model = timm.create_model(enc.name, pretrained=False, num_classes=0).eval()
    try:
        model.load_state_dict(enc.model.state_dict(), strict=True)
    except (RuntimeError, KeyError):
        log.info("pipeline backbone weights do not fit a fresh %s (folded?); timing with random weights", enc.name)
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Copy of a timm EfficientNet-style model with BatchNorm folded (``medmm.models.encoders.fold_batchnorm``)."""
    from medmm.models.encoders import fold_batchnorm as fold

    return fold(copy.deepcopy(model).eval())


def _own_caches(clone: Any) -> Any:
    """Give a shallow copy of a pipeline caches of its own (the notes' tokens and features) and their lock.

    A shallow copy shares the original's cache dicts; two pipelines writing one dict under two different locks race.
    """
    clone._text_cache, clone._tok_cache, clone._text_lock = OrderedDict(), OrderedDict(), threading.Lock()
    return clone


def _pipeline_with_backbone(pipeline: Any, backbone: nn.Module) -> Any:
    """A shallow copy of ``pipeline`` whose model is a deep copy with ``backbone`` as the timm model (own caches)."""
    clone = _own_caches(copy.copy(pipeline))
    clone.model = copy.deepcopy(pipeline.model)
    clone.model.image_encoder.model = backbone
    return clone


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
    variants_req = {"as_shipped": pipeline, "bn_folded": _pipeline_with_backbone(pipeline, folded),
                    "bn_folded_channels_last": _pipeline_with_backbone(pipeline, folded_cl)}
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


# ============================================================================================ runtimes
def runtime_pipelines(pipeline: Any, names: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """``{runtime: pipeline}`` sharing ``pipeline``'s model (shallow copies with their own caches), one per
    installed runtime; plus ``{runtime: error}`` for those that failed to build."""
    from medmm import runtime as rt

    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in names or rt.available():
        try:
            enc = rt.build(name, pipeline.model, pipeline.meta, pipeline.device)
        except Exception as e:  # noqa: BLE001 - one runtime failing must not sink the bench
            errors[name] = f"{type(e).__name__}: {e}"
            continue
        clone = _own_caches(copy.copy(pipeline))
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
    fastest = min(out, key=lambda n: out[n]["p50_ms"])
    return {"by_runtime": out, "fastest": fastest, "errors": errors, "compared_inputs": len(refs),
            "what": "p50/p95 = image encoder, batch 1, one 224 px view (Pipeline.image_features); "
                    "max_abs_dp_vs_torch over every bench input with and without notes"}


# ============================================================================================ the benchmark
def run_bench(checkpoint: str | Path | None = None, repeats: int = 20, *, cold: bool = True,
              explain_methods: Sequence[str] = EXPLAIN_METHODS, explain_repeats: int | None = None,
              batch_sizes: Sequence[int] = BATCH_SIZES, run_experiments: bool = True,
              threads: int | None = None, runtime: str | None = None,
              compare_runtimes: bool = True) -> dict[str, Any]:
    """Run every stage once in this process and return the result dict (see the module docstring)."""
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
        pipe = _load_pipeline(checkpoint, runtime, result)
        if cold:
            log.info("cold start (subprocess)")
            result["cold_start"] = cold_start(checkpoint, files["png"], threads=threads, runtime=runtime)
        stages: dict[str, dict[str, float]] = {}
        with torch.inference_mode():
            bare, x224, inputs_mm, prediction = _model_stages(pipe, files, repeats, stages)
            pair = _request_stages(pipe, files, bare, x224, inputs_mm, prediction, repeats, stages, notes_out)
            result["notes_cost"] = notes_cpu_cost(pipe, files["png"], max(repeats, 10))
        _service_stage(pipe, files, repeats, stages, result, notes_out)
        # explanations (gradients: outside inference_mode, explain() handles it)
        ex_stages = _explain_stages(pipe, inputs_mm, prediction, explain_methods,
                                    explain_repeats or max(1, min(3, repeats // 5)), notes_out)
        ex_facts = ex_stages.pop("_facts", {})
        stages.update(ex_stages)
        if ex_stages:
            result["explanations"] = explanation_summary(ex_stages, ex_facts)
        result["throughput"] = _throughput(pipe, x224, batch_sizes, repeats)  # image encoder + head, batched
        if compare_runtimes:
            log.info("runtimes side by side")
            result["runtimes"] = bench_runtimes(pipe, files, max(repeats, FAST_MIN_REPEATS))
        result["stages"] = stages
        _overhead(result, stages, pair, pipe.runtime_name)
        result["memory"]["rss_end_mb"] = rss_mb()
        result["memory"]["peak_rss_mb"] = peak_rss_mb()  # before the experiments' model copies
        if run_experiments:
            log.info("experiments")
            result["experiments"] = experiments(pipe, bare, files["png"], repeats)
            result["memory"]["peak_rss_incl_experiments_mb"] = peak_rss_mb()
        _contention(result, notes_out)
    finally:
        tmp.cleanup()
    result["bench_wall_s"] = round(time.perf_counter() - t_all, 1)
    result["notes"] = notes_out
    return result


def _load_pipeline(checkpoint: Path, runtime: str | None, result: dict[str, Any]) -> Any:
    """Load the pipeline in this process; machine, checkpoint, runtime and memory facts go into ``result``."""
    from medmm.pipeline import Pipeline

    rss_before = rss_mb()
    pipe, load_s = _timed(lambda: Pipeline.from_checkpoint(checkpoint, runtime=runtime))
    result["machine"] = machine_info(pipe.device)
    result["checkpoint"] = {"path": str(checkpoint), "name": pipe.meta.name, "trained": pipe.meta.trained,
                            "image_encoder": pipe.model.image_encoder.name}
    result["runtime"] = "torch" if pipe.runtime is None else pipe.runtime.describe()
    result["memory"] = {"rss_before_load_mb": rss_before, "rss_after_load_mb": rss_mb(),
                        "in_process_load_s": round(load_s, 3)}
    return pipe


def _model_stages(pipe: Any, files: dict[str, Path], repeats: int, stages: dict) -> tuple[Any, Any, Any, Any]:
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


def _request_stages(pipe: Any, files: dict[str, Path], bare: Any, x224: Any, inputs_mm: Any, prediction: Any,
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


def _service_stage(pipe: Any, files: dict[str, Path], repeats: int, stages: dict, result: dict[str, Any],
                   notes_out: list[str]) -> None:
    """The service path the CLI and the app run (load + inference + report, metered) and its energy."""
    try:
        from medmm.service import run_request

        joules: list[float] = []

        def service_call() -> None:
            r = run_request(pipe, [files["png"]], TYPICAL_NOTES)
            joules.append(float(r.energy.to_dict().get("joules") or 0.0))

        stages["service_request.png+notes+report"] = time_fn(service_call, repeats)
        result["energy_per_service_request_j"] = round(float(np.median(joules)), 4) if joules else None
    except Exception as e:  # noqa: BLE001 - another team's stage must not sink the whole bench
        notes_out.append(f"service_request skipped: {type(e).__name__}: {e}")


def _overhead(result: dict[str, Any], stages: dict, pair: dict, runtime_name: str) -> None:
    """``overhead_ratio`` (whole image-only request / bare backbone, interleaved) and the same ratio by input."""
    bare_p50 = stages["bare_backbone"]["p50_ms"]
    result["overhead_ratio"] = round(pair["whole_request.png"]["p50_ms"] / pair["bare_backbone"]["p50_ms"], 3)
    result["overhead_ratio_terms"] = {**pair, "what": "whole image-only Pipeline.predict on the 1024^2 PNG "
                                      "(pipeline runtime: " + runtime_name + ") / bare timm backbone (torch, "
                                      "NCHW, batch 1, 224 px), p50, interleaved in this run"}
    result["overhead_ratio_by_input"] = {k[len("whole_request."):]: round(v["p50_ms"] / bare_p50, 3)
                                         for k, v in stages.items() if k.startswith("whole_request.")}
    result["overhead_target"] = OVERHEAD_TARGET


def _contention(result: dict[str, Any], notes_out: list[str]) -> None:
    """Was the machine shared while the bench ran? (load average against usable CPUs, start and end)"""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    result["machine"]["loadavg_1m_end"] = round(load[0], 2)
    busy = max(result["machine"]["loadavg_1m_start"], load[0])
    cores = result["machine"]["cpus_usable"] or 1
    result["machine"]["contended"] = bool(busy > 1.25 * cores)  # this bench alone keeps load near cores
    if result["machine"]["contended"]:
        notes_out.append(f"load average {busy:.1f} on {cores} CPUs: other work shared the machine; figures are "
                         "measured under contention")


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _explain_stages(pipe: Any, inputs: Any, prediction: Any, methods: Sequence[str], repeats: int,
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


EXPLAIN_MIN_REPEATS = {"gradcam": 5, "ig": 3, "occlusion": 3}  # quick mode still gets a median, not one sample
EXPLAIN_TARGETS_MS = {"explanation.gradcam": 150.0, "explanation.ig": 1000.0, "explanation.occlusion": 1000.0}
FAST_MIN_REPEATS = 20  # stages of a few ms: at least this many samples whatever --repeats says (cheap)


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


def _throughput(pipe: Any, x224: torch.Tensor, batch_sizes: Sequence[int], repeats: int) -> dict[str, Any]:
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


# ============================================================================================ output
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
