"""Inference runtimes for the two encoders: torch (reference), ONNX Runtime, OpenVINO. One switch picks one.

Why: the encoders dominate a request and both export cleanly to ONNX; on the 2-core CPU box ONNX Runtime and
OpenVINO run the image encoder in roughly a third of the torch time with the same features to ~1e-5 (see
``python -m medmm bench`` -> ``runtimes``, and docs/bench.md). Training, explanations (they need gradients) and
the fusion head always use torch; only the forward-only encoder calls of ``Pipeline`` go through a runtime.

The switch: ``Pipeline.from_checkpoint(..., runtime=...)``, ``--runtime`` on the CLI, or the environment variable
``MEDMM_RUNTIME`` = ``auto`` (default) | ``torch`` | ``onnxruntime`` | ``openvino``. ``auto`` takes the first
installed runtime of ``AUTO_ORDER_CPU`` on a CPU (the order is the measured one); on CUDA it takes ONNX Runtime
when its CUDA provider loads, else torch. An explicitly requested runtime that is not installed is an error
(``RuntimeUnavailable``), never a silent fallback.

Two graphs: the image encoder, and the notes features before the expert's column (the sentence encoder's pooled
embedding plus, for a model with one, its trained bag of words over the same token embeddings: ``_TextGraph``).
ONNX files are exported at load time into a cache folder (``MEDMM_CACHE_DIR``, default
``$XDG_CACHE_HOME/medmm/onnx`` or ``~/.cache/medmm/onnx``), named by a key over the checkpoint's weights sha256
(the image encoder) or the text encoder's and bag of words' weights (the text graph), the architecture, the input
size and the torch/exporter versions: a retrained checkpoint gets a fresh export, and nothing checkpoint-dependent is
committed. Writes are atomic (temporary file + rename), so concurrent processes can share the folder.

Thread safety: ``InferenceSession.run`` is thread-safe; OpenVINO infer requests are not, so each thread gets its
own (``threading.local``). Outputs are fresh arrays (OpenVINO's are copied out of the request's buffer).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medmm.config import RUNTIME_CHOICES, RUNTIMES

log = logging.getLogger(__name__)

ENV_VAR = "MEDMM_RUNTIME"
CACHE_ENV = "MEDMM_CACHE_DIR"
CHOICES = RUNTIME_CHOICES
# measured order on the 2-core CPU box (docs/bench.md, `bench --json` -> runtimes): fastest image encoder first
AUTO_ORDER_CPU: tuple[str, ...] = ("openvino", "onnxruntime", "torch")
OPSET = 17
EXPORT_VERSION = 2  # bump when the exported graphs change meaning (inputs, pooling, names)


class RuntimeUnavailable(RuntimeError):
    """The requested runtime is not installed / cannot run on this device (message says which and why)."""


# ============================================================================================ which runtime
def installed(name: str) -> bool:
    """Whether runtime ``name`` can run here (torch always can).

    An ONNX runtime also needs the ``onnx`` package: ``torch.onnx.export`` writes the graphs with it, so
    onnxruntime without onnx would fail at the first export - count it as absent instead.
    """
    if name == "torch":
        return True
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(name)
    if module is None:
        return False
    try:
        __import__(module)
        __import__("onnx")
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


def resolve(requested: str | None, device: str = "cpu") -> str:
    """``requested`` (or ``$MEDMM_RUNTIME``, or ``auto``) -> a concrete runtime name for ``device``."""
    name = (requested or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if name not in CHOICES:
        raise RuntimeUnavailable(f"Unknown runtime {name!r}; choose one of: {', '.join(CHOICES)}.")
    cuda = str(device).startswith("cuda")
    if name == "auto":
        if cuda:
            return "onnxruntime" if ort_cuda_available() else "torch"
        return next(r for r in AUTO_ORDER_CPU if installed(r))
    if not installed(name):
        raise RuntimeUnavailable(f"Runtime {name!r} is not installed (pip install {name}); installed: "
                                 f"{', '.join(available())}.")
    if cuda and name == "openvino":
        raise RuntimeUnavailable("The openvino runtime runs on the CPU only; use torch or onnxruntime with CUDA.")
    if cuda and name == "onnxruntime" and not ort_cuda_available():
        raise RuntimeUnavailable("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu); "
                                 "use --runtime torch on this GPU.")
    return name


# ============================================================================================ cache + export
def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "medmm" / "onnx"


def export_key(*parts: Any) -> str:
    """Short stable key over the things an exported graph depends on."""
    h = hashlib.sha256()
    for p in (EXPORT_VERSION, OPSET, torch.__version__, *parts):
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def state_fingerprint(module: nn.Module) -> str:
    """sha256 over a module's parameters and buffers (names, shapes, bytes): keys exports of unversioned weights."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(repr((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
            output_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> Path:
    """``torch.onnx.export`` (TorchScript exporter: no onnxscript needed) to ``path`` atomically; no-op if present."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer/deprecation warnings are noise in a server log
            torch.onnx.export(module, args, tmp, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("exported %s", path)
    return path


class _TextGraph(nn.Module):
    """What ``MedMM.encode_text`` computes before the notes expert's column, as one graph: token embeddings ->
    transformer -> masked mean -> L2 normalisation (``TextEncoder.forward_embeds``) and, for a model with one, its
    trained bag of words over the same token embeddings, concatenated after the pooled embedding."""

    def __init__(self, model: nn.Module, bag_of_words: nn.Module | None = None) -> None:
        super().__init__()
        self.model, self.bag_of_words = model, bag_of_words

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeds = self.model.get_input_embeddings()(input_ids)
        hidden = self.model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-6), dim=-1)
        if self.bag_of_words is None:
            return pooled
        return torch.cat([pooled, self.bag_of_words(embeds, attention_mask)], dim=-1)


def export_image_encoder(encoder: Any, key_source: str, input_size: int, folder: Path | None = None) -> Path:
    """ONNX of ``ImageEncoder.model`` (``[N, 3, S, S]`` -> ``[N, F]``, dynamic N), keyed by ``key_source``."""
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in encoder.model.modules())  # folded or not: other weights
    key = export_key("image", encoder.name, key_source, input_size, n_bn)
    path = (folder or cache_dir()) / f"image_{encoder.name}_{key}.onnx"
    if path.is_file():
        return path
    model = copy.deepcopy(encoder.model).cpu().eval().to(memory_format=torch.contiguous_format)
    x = torch.zeros(1, 3, input_size, input_size)
    return _export(model, (x,), path, ["pixels"], ["features"], {"pixels": {0: "batch"}, "features": {0: "batch"}})


def export_text_encoder(text_encoder: Any, folder: Path | None = None, bag_of_words: nn.Module | None = None) -> Path:
    """ONNX of the notes features before the expert column (``input_ids``, ``attention_mask`` ``[N, T]`` int64 ->
    ``[N, H]``, or ``[N, H + D]`` with the model's bag of words): see ``_TextGraph``."""
    key = export_key("text", state_fingerprint(text_encoder.model),
                     None if bag_of_words is None else state_fingerprint(bag_of_words))
    path = (folder or cache_dir()) / f"text_{key}.onnx"
    if path.is_file():
        return path
    bag = None if bag_of_words is None else copy.deepcopy(bag_of_words).cpu().eval()
    model = _TextGraph(copy.deepcopy(text_encoder.model).cpu().eval(), bag)
    tok = text_encoder.tokenize(["a chest radiograph", "cough and fever for three days"])
    return _export(model, (tok["input_ids"], tok["attention_mask"]), path, ["input_ids", "attention_mask"],
                   ["features"], {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                  "features": {0: "batch"}})


# ============================================================================================ sessions
def _threads() -> int:
    return max(1, torch.get_num_threads())


class OrtSession:
    """ONNX Runtime session; ``run(feeds) -> first output``. CUDA provider first when ``device`` is CUDA."""

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or _threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # spinning worker threads burn the time slice they wait in; on a shared 2-core box that is slower
        so.add_session_config_entry("session.intra_op.allow_spinning",
                                    os.environ.get("MEDMM_ORT_SPIN", "0"))
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


class OvSession:
    """OpenVINO compiled model (CPU, f32: the CPU plugin's default bf16 on AVX512-BF16 parts is off by ~0.1)."""

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        import openvino as ov

        if str(device).startswith("cuda"):
            raise RuntimeUnavailable("openvino runs on the CPU only")
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": int(threads or _threads())}
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.providers = ["openvino:CPU"]
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        # share_inputs: OpenVINO reads the caller's (contiguous) arrays in place instead of copying them in; they
        # stay alive for the call, and nothing writes to them meanwhile
        req.infer(feeds, share_inputs=True)
        return req.get_output_tensor(0).data.copy()  # the request reuses its output buffer on the next call


def open_session(runtime: str, path: Path, device: str = "cpu", threads: int | None = None) -> OrtSession | OvSession:
    if runtime == "onnxruntime":
        return OrtSession(path, device, threads)
    if runtime == "openvino":
        return OvSession(path, device, threads)
    raise RuntimeUnavailable(f"{runtime!r} has no ONNX session")


# ============================================================================================ encoders
@dataclass
class EncoderRuntime:
    """The pipeline's encoders under one runtime. ``image``/``text`` are None for torch (the model runs itself)."""

    name: str
    device: str = "cpu"
    image: OrtSession | OvSession | None = None
    text: OrtSession | OvSession | None = None
    text_dim: int | None = None          # width of the pooled embedding in the text graph's output (the rest: bag)
    files: dict[str, str] = field(default_factory=dict)
    providers: list[str] = field(default_factory=list)

    def encode_image_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` -> ``[N, F]`` float32 on ``x``'s device."""
        arr = x.detach().float().contiguous().cpu().numpy()  # NCHW, what the graph was exported with
        return torch.from_numpy(self.image.run({"pixels": arr})).to(x.device)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, V, 3, S, S]`` -> mean over views ``[B, F]`` (as ``MedMM.encode_images`` without a view mask)."""
        from medmm.models.model import pool_views, view_features

        return pool_views(view_features(self.encode_image_batch, pixels))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(pooled [N, H], bag of words [N, D] or None)`` for ``MedMM.join_text_features``."""
        # contiguous copies where needed (an expanded attention mask has stride 0): OpenVINO reads them in place
        feeds = {"input_ids": np.ascontiguousarray(input_ids.detach().cpu().numpy(), dtype=np.int64),
                 "attention_mask": np.ascontiguousarray(attention_mask.detach().cpu().numpy(), dtype=np.int64)}
        out = torch.from_numpy(self.text.run(feeds)).to(input_ids.device)
        if self.text_dim is None or out.shape[1] == self.text_dim:
            return out, None
        return out[:, :self.text_dim], out[:, self.text_dim:]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "providers": self.providers,
                "image_encoder": "torch" if self.image is None else self.name,
                "text_encoder": "torch" if self.text is None else self.name, "files": self.files}


def build(runtime: str | None, model: Any, meta: Any, device: str = "cpu", *, folder: Path | None = None,
          threads: int | None = None, text: bool = True) -> EncoderRuntime:
    """Resolve ``runtime`` and, for an ONNX runtime, export (cached) + open the image and text encoder graphs.

    ``meta.weights_sha256`` keys the image export. ``text=False`` keeps the text encoder in torch.
    """
    name = resolve(runtime, device)
    rt = EncoderRuntime(name, device)
    if name == "torch":
        rt.providers = ["torch:" + str(device)]
        return rt
    size = meta.preprocessing.input_size
    key_source = meta.weights_sha256 or state_fingerprint(model.image_encoder)
    img_path = export_image_encoder(model.image_encoder, key_source, size, folder)
    rt.image = open_session(name, img_path, device, threads)
    rt.files["image_encoder"] = str(img_path)
    rt.providers = list(rt.image.providers)
    if text and model.text_encoder is not None:  # sentence encoder (+ the model's bag of words) as one graph
        txt_path = export_text_encoder(model.text_encoder, folder, getattr(model, "bag_of_words", None))
        rt.text = open_session(name, txt_path, device, threads)
        rt.text_dim = model.text_encoder.dim
        rt.files["text_encoder"] = str(txt_path)
    return rt


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


__all__ = ["AUTO_ORDER_CPU", "CHOICES", "ENV_VAR", "EncoderRuntime", "RUNTIMES", "RuntimeUnavailable", "available",
           "build", "cache_dir", "export_image_encoder", "export_text_encoder", "installed", "resolve"]
