"""One ONNX Runtime / OpenVINO session per exported graph: ``run(feeds) -> first output``, ``run_all`` -> every one.

Torch-free. Thread safety: ``InferenceSession.run`` is thread-safe; OpenVINO infer requests are not, so each thread
gets its own (``threading.local``). Outputs are fresh arrays (OpenVINO's are copied out of the request's buffer).
``LazySession`` opens its session on first use, so a request that needs no notes never compiles the text graph.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

OV_CACHE_SUBDIR = "openvino"   # OpenVINO's compiled-model cache, inside the graph cache folder when it is writable


def default_threads() -> int:
    """torch's intra-op thread count when torch is loaded (the sessions then follow ``--threads``); otherwise what
    torch's default would be: ``$OMP_NUM_THREADS``, else the CPUs this process may use."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, torch.get_num_threads())
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


class OrtSession:
    """ONNX Runtime session. CUDA provider first when ``device`` is CUDA."""

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or default_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # spinning worker threads burn the time slice they wait in; on a shared 2-core box that is slower
        so.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("MEDMM_ORT_SPIN", "0"))
        so.log_severity_level = 3
        providers: list[Any] = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            index = int(str(device).split(":")[1]) if ":" in str(device) else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), so, providers=providers)
        self.providers = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feeds)[0]

    def run_all(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(None, feeds))


class OvSession:
    """OpenVINO compiled model (CPU, f32: the CPU plugin's default bf16 on AVX512-BF16 parts is off by ~0.1).

    ``cache``: OpenVINO's compiled-model cache folder (a second process loads the compiled model instead of
    compiling it again: ~0.2 s instead of ~0.45 s for the image encoder); None where the cache folder is read-only.
    """

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None, cache: Path | None = None) -> None:
        import openvino as ov

        if str(device).startswith("cuda"):
            from medmm.runtime import RuntimeUnavailable

            raise RuntimeUnavailable("openvino runs on the CPU only")
        core = ov.Core()
        if cache is not None:
            core.set_property({"CACHE_DIR": str(cache)})
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": int(threads or default_threads())}
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.n_outputs = len(self.compiled.outputs)
        self.providers = ["openvino:CPU"]
        self._local = threading.local()

    def _infer(self, feeds: dict[str, np.ndarray]):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        # share_inputs: OpenVINO reads the caller's (contiguous) arrays in place instead of copying them in; they
        # stay alive for the call, and nothing writes to them meanwhile
        req.infer(feeds, share_inputs=True)
        return req

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._infer(feeds).get_output_tensor(0).data.copy()  # the request reuses its buffer on the next call

    def run_all(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        req = self._infer(feeds)
        return [req.get_output_tensor(i).data.copy() for i in range(self.n_outputs)]


# runtime -> its session class (a new runtime adds its line here and in medmm.runtime.RUNTIME_PACKAGES)
SESSIONS: dict[str, Callable[..., Any]] = {
    "onnxruntime": OrtSession,
    "openvino": OvSession,
    "openvino-int8": OvSession,   # the same session over an int8 model (the CPU plugin runs its int8 kernels)
}


def ov_cache(folder: Path) -> Path | None:
    """OpenVINO's compiled-model cache inside ``folder``, or None where it cannot be written (a read-only cache)."""
    path = folder / OV_CACHE_SUBDIR
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def open_session(runtime: str, path: Path, device: str = "cpu", threads: int | None = None) -> OrtSession | OvSession:
    """A session of ``runtime`` over the graph file ``path`` (OpenVINO caches its compiled model beside the graph)."""
    cls = SESSIONS.get(runtime)
    if cls is None:
        from medmm.runtime import RuntimeUnavailable

        raise RuntimeUnavailable(f"{runtime!r} has no ONNX session")
    if cls is OvSession:
        return OvSession(path, device, threads, cache=ov_cache(Path(path).parent))
    return cls(path, device, threads)


class LazySession:
    """A session opened on first use (thread-safe, once): ``providers`` before then are the runtime's name."""

    def __init__(self, runtime: str, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        self.runtime, self.path, self.device, self.threads = runtime, Path(path), device, threads
        self._session: OrtSession | OvSession | None = None
        self._lock = threading.Lock()

    @property
    def opened(self) -> bool:
        return self._session is not None

    def get(self) -> OrtSession | OvSession:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = open_session(self.runtime, self.path, self.device, self.threads)
        return self._session

    @property
    def providers(self) -> list[str]:
        return self.get().providers

    @property
    def input_names(self) -> list[str]:
        return self.get().input_names

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.get().run(feeds)

    def run_all(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.get().run_all(feeds)


__all__ = ["LazySession", "OrtSession", "OvSession", "SESSIONS", "default_threads", "open_session", "ov_cache"]
