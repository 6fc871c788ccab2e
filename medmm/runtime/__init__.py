"""Inference runtimes: torch (reference), ONNX Runtime, OpenVINO. One switch picks one.

Why: the encoders dominate a request and export cleanly to ONNX; on the 2-core CPU box ONNX Runtime and OpenVINO
run the image encoder in roughly a third of the torch time with the same features to ~1e-5 (``python -m medmm
bench`` -> ``runtimes``, docs/bench.md). And once every forward-only stage of a prediction is a cached graph, a
prediction needs no torch at all: a one-image ``medmm predict`` starts in the time ``import torch`` alone takes.

The switch: ``Pipeline.from_checkpoint(..., runtime=...)``, ``--runtime`` on the CLI, or the environment variable
``MEDMM_RUNTIME`` = ``auto`` (default) | ``torch`` | ``onnxruntime`` | ``openvino`` | ``openvino-int8``. ``auto``
takes the first installed runtime of ``AUTO_ORDER_CPU`` on a CPU (the order is the measured one), skipping those in
``CONTRACT_GATED`` unless the caller's ``passes`` says the checkpoint's measured contract holds on this CPU
(``openvino-int8``: ``int8.auto_model``); on CUDA it takes ONNX Runtime when its CUDA provider loads, else torch.
An explicitly requested runtime that is not installed is an error (``RuntimeUnavailable``), never a silent fallback.

The modules (only ``export``, ``encoders.build`` and ``warmup`` import torch):

* here: which runtime (``resolve``), the cache folder, the table of runtimes (``RUNTIME_PACKAGES``);
* ``sessions``: one ONNX Runtime / OpenVINO session per graph (``SESSIONS``: the session class of each runtime);
* ``cache``: the cache folder's index of a checkpoint's graphs (``GraphSet``), keyed without torch;
* ``graphs``: ``GraphModel``, every forward-only stage of a prediction from the cached graphs (numpy in, numpy out);
* ``tokens``: the notes' token ids from ``tokenizers`` and the text encoder's ``tokenizer.json``;
* ``encoders``: ``EncoderRuntime``, the two encoders for torch callers (explanations, the batcher, the bench);
* ``export``: the torch -> ONNX exports (image encoder, text graph, input gate, fusion head), atomic, keyed;
* ``warmup``: exports a checkpoint's whole graph set (the first run, or ``python -m medmm warmup``);
* ``int8``: ``openvino-int8``'s image encoder, quantised by NNCF (optional extra ``int8``), its cache and contract.

Adding a runtime: its package in ``RUNTIME_PACKAGES`` (and the choice in ``medmm.config.RUNTIMES``), its session
class in ``sessions.SESSIONS``; ``AUTO_ORDER_CPU`` if ``auto`` may pick it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Callable

from medmm._lazy import lazy_exports
from medmm.config import RUNTIME_CHOICES, RUNTIMES

ENV_VAR = "MEDMM_RUNTIME"
CACHE_ENV = "MEDMM_CACHE_DIR"
CHOICES = RUNTIME_CHOICES
# measured order on the 2-core CPU box (docs/bench.md, `bench --json` -> runtimes): fastest image encoder first
# (openvino-int8: docs/bench.md, "int8"), each taken only where installed and, if contract-gated, passed here
AUTO_ORDER_CPU: tuple[str, ...] = ("openvino-int8", "openvino", "onnxruntime", "torch")
# runtimes ``auto`` takes only where a measured accuracy contract says so for the checkpoint (``resolve(passes=)``)
CONTRACT_GATED: frozenset[str] = frozenset({"openvino-int8"})
# runtime -> the package that must import for it to run (torch, the reference, needs none of these). openvino-int8
# runs a cached int8 model with openvino alone; quantising one needs nncf (medmm.runtime.int8)
RUNTIME_PACKAGES: dict[str, str] = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "openvino-int8": "openvino",
}
CPU_ONLY: frozenset[str] = frozenset({"openvino", "openvino-int8"})
NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl")  # no GPU torch could use without one


class RuntimeUnavailable(RuntimeError):
    """The requested runtime is not installed / cannot run on this device (message says which and why)."""


# ============================================================================================ which runtime
def installed(name: str, export: bool = True) -> bool:
    """Whether runtime ``name`` can run here (torch always can).

    With ``export`` (the default), an ONNX runtime also needs the ``onnx`` package: ``torch.onnx.export`` writes the
    graphs with it, so onnxruntime without onnx would fail at the first export - it counts as absent. Running graphs
    already cached (``export=False``) needs the runtime only; ``onnx`` is looked up, not imported (2 s).
    """
    if name == "torch":
        return True
    module = RUNTIME_PACKAGES.get(name)
    if module is None:
        return False
    try:
        importlib.import_module(module)
        if export and importlib.util.find_spec("onnx") is None:
            return False
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
    return True


def available() -> list[str]:
    return [r for r in RUNTIMES if installed(r)]


def ort_cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except Exception:  # noqa: BLE001
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def resolve(requested: str | None, device: str = "cpu", export: bool = True,
            passes: Callable[[str], bool] | None = None) -> str:
    """``requested`` (or ``$MEDMM_RUNTIME``, or ``auto``) -> a concrete runtime name for ``device``.

    ``export=False``: for graphs already cached (the exporter's ``onnx`` package is not required). ``passes``: for
    ``auto``, whether a ``CONTRACT_GATED`` runtime's measured contract holds for this checkpoint on this CPU (without
    it, ``auto`` never takes one)."""
    name = (requested or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if name not in CHOICES:
        raise RuntimeUnavailable(f"Unknown runtime {name!r}; choose one of: {', '.join(CHOICES)}.")
    cuda = str(device).startswith("cuda")
    if name == "auto":
        if cuda:
            return "onnxruntime" if ort_cuda_available() else "torch"
        return next(r for r in AUTO_ORDER_CPU if installed(r, export)
                    and (r not in CONTRACT_GATED or (passes is not None and passes(r))))
    if not installed(name, export):
        raise RuntimeUnavailable(f"Runtime {name!r} is not installed (pip install {RUNTIME_PACKAGES.get(name, name)}); "
                                 f"installed: {', '.join(available())}.")
    if cuda and name in CPU_ONLY:
        raise RuntimeUnavailable(f"The {name} runtime runs on the CPU only; use torch or onnxruntime with CUDA.")
    if cuda and name == "onnxruntime" and not ort_cuda_available():
        raise RuntimeUnavailable("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu); "
                                 "use --runtime torch on this GPU.")
    return name


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``; without a visible NVIDIA driver, ``cpu`` without importing torch
    (the torch-free path must not pay 2.6 s to learn there is no GPU)."""
    import sys

    if "torch" not in sys.modules and not any(Path(p).exists() for p in NVIDIA_DRIVER_FILES):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cache_dir() -> Path:
    """``$MEDMM_CACHE_DIR``, else ``$XDG_CACHE_HOME/medmm/onnx`` or ``~/.cache/medmm/onnx``: the exported graphs."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "medmm" / "onnx"


_EXPORTS = {
    **dict.fromkeys(("CacheNotWritable", "GraphSet", "graph_key"), "cache"),
    **dict.fromkeys(("OrtSession", "OvSession", "SESSIONS", "open_session"), "sessions"),
    **dict.fromkeys(("GraphModel", "int8_passes", "open_graphs"), "graphs"),
    **dict.fromkeys(("NotesTokenizer",), "tokens"),
    **dict.fromkeys(("EncoderRuntime", "build", "max_abs_diff"), "encoders"),
    **dict.fromkeys(("EXPORT_VERSION", "OPSET", "export_gate", "export_head", "export_image_encoder", "export_key",
                     "export_text_encoder", "state_fingerprint"), "export"),
    **dict.fromkeys(("warm",), "warmup"),
}
__all__ = sorted(["AUTO_ORDER_CPU", "CACHE_ENV", "CHOICES", "CONTRACT_GATED", "CPU_ONLY", "ENV_VAR", "RUNTIMES",
                  "RUNTIME_PACKAGES",
                  "RuntimeUnavailable", "available", "cache_dir", "default_device", "installed", "ort_cuda_available",
                  "resolve", *_EXPORTS])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
