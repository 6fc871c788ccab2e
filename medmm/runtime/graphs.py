"""``GraphModel``: every forward-only stage of a prediction from a checkpoint's cached graphs - numpy in, numpy out.

What a prediction asks of the model, and which graph answers (``medmm.runtime.export`` wrote them):

* scan pixels -> model input: numpy (``medmm.models.preprocess``, the twin of ``transforms.to_model_input``);
* the input gate's features: ``gate`` (the probe on them is numpy already, ``medmm.gate``);
* the image encoder: ``image`` (also what explanations and the batcher use, through ``EncoderRuntime``);
* the fusion head with the notes absent, and the image's state probabilities: ``head``;
* the notes' sentence embedding (the draft report's sentence ranking): ``text``, over ids from ``tokenizers``.

Nothing here imports torch: with the graph set cached, ``Pipeline.from_checkpoint`` builds a pipeline on this and
the torch model is loaded only when something needs gradients (an explanation) or the torch model itself.
Sessions open on first use (``LazySession``): a request without notes never compiles the text graph.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmm.config import Preprocessing
from medmm.models.preprocess import to_model_array
from medmm.runtime import cache_dir
from medmm.runtime.cache import GraphSet, graph_key
from medmm.runtime.encoders import EncoderRuntime
from medmm.runtime.sessions import LazySession
from medmm.runtime.tokens import NotesTokenizer

log = logging.getLogger(__name__)


@dataclass
class GraphModel:
    graphs: GraphSet
    encoders: EncoderRuntime             # image (+ text) sessions
    head: LazySession
    gate: LazySession | None
    prep: Preprocessing
    text_encoder: str | None             # ModelConfig.text_encoder (its tokenizer.json), None without notes graph
    max_tokens: int = 256
    _tokenizer: NotesTokenizer | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.encoders.name

    # ---------------------------------------------------------------------------------------------- images
    def model_input(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Scans' ``[H, W]`` pixels in [0, 1] -> the request's model input ``[1, V, C, S, S]`` float32."""
        return np.stack([to_model_array(p, self.prep) for p in pixels])[None]

    def gate_features(self, x: np.ndarray) -> np.ndarray:
        """``[V, C, S, S]`` -> the input gate's features ``[V, D]`` (float64, as ``InputGate.features``)."""
        return self.gate.run({"pixels": np.ascontiguousarray(x, np.float32)}).astype(np.float64)

    def image_features(self, x: np.ndarray) -> np.ndarray:
        """``[N, C, S, S]`` -> ``[N, F]``."""
        return self.encoders.image_array(x)

    def head_outputs(self, image_feat: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Pooled image features ``[N, F]`` -> (finding log-odds ``[N, K]`` with the notes absent, the image's state
        probabilities ``[N, L]`` or None for a model of independent findings)."""
        out = self.head.run_all({"image_features": np.ascontiguousarray(image_feat, np.float32)})
        return out[0], (out[1] if len(out) > 1 else None)

    # ---------------------------------------------------------------------------------------------- notes
    @property
    def tokenizer(self) -> NotesTokenizer | None:
        if self._tokenizer is None and self.text_encoder is not None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = NotesTokenizer.for_text_encoder(self.text_encoder, self.max_tokens)
        return self._tokenizer

    @property
    def has_notes(self) -> bool:
        """Whether the notes' sentence embedding runs here (a text graph and a ``tokenizer.json``)."""
        return self.encoders.text is not None and self.tokenizer is not None

    def notes_embedding(self, notes: str) -> np.ndarray:
        """The notes' L2-normalised sentence embedding ``[H]`` float32."""
        ids, mask = self.tokenizer([notes])
        pooled, _ = self.encoders.text_arrays(ids, mask)
        return pooled[0]

    def warm(self) -> None:
        """Run every graph once, in the calling thread, before concurrent requests use them: OpenVINO's Python data
        path sets up shared state on its first calls, and two first calls at once deadlocked a served app (two
        request threads blocked in ``InferRequest.infer``'s dtype lookup while a third imported spaCy)."""
        x = self.model_input([np.full((64, 64), 0.5, np.float32)])[0]     # one mid-grey view, [1, C, S, S]
        if self.gate is not None:
            self.gate_features(x)
        self.head_outputs(self.image_features(x))
        if self.encoders.reference is not None:                           # openvino-int8: the fp32 encoder too
            self.encoders.reference.run({"pixels": np.ascontiguousarray(x, np.float32)})
        if self.has_notes:
            self.notes_embedding("warm-up")


def _text_identity(meta: Any) -> str | None:
    from medmm.models.offline import text_encoder_identity

    return text_encoder_identity(meta.model.text_encoder) if meta.model.text_encoder else None


def graph_set_key(meta: Any, gate: Any | None) -> str:
    """The cache index key of a checkpoint's graph set (``cache.graph_key`` over its JSON, gate and text encoder)."""
    return graph_key(meta, gate, _text_identity(meta))


def int8_passes(meta: Any, gate: Any | None, folder: Path | None = None) -> bool:
    """Whether ``auto`` may take ``openvino-int8`` for this checkpoint: its cached graph set has an int8 image encoder
    whose measured contract passed on a CPU with this CPU's int8 instructions (``int8.auto_model``). Torch-free."""
    found = GraphSet.load(folder or cache_dir(), graph_set_key(meta, gate))
    if found is None or found.path("image") is None:
        return False
    from medmm.runtime.int8 import auto_model

    return auto_model(found.path("image")) is not None


def open_graphs(meta: Any, runtime: str, device: str = "cpu", gate: Any | None = None, *,
                folder: Path | None = None, threads: int | None = None) -> GraphModel | None:
    """The checkpoint's cached graph set under ``runtime``, or None when the cache has no complete set for it.
    ``openvino-int8``: the image encoder from ``int8.image_model`` (``Int8Unavailable`` when there is none)."""
    folder = folder or cache_dir()
    found = GraphSet.load(folder, graph_set_key(meta, gate))
    if found is None or "image" not in found.files or "head" not in found.files \
            or (gate is not None and "gate" not in found.files):
        return None

    def session(name: str) -> LazySession | None:
        path = found.path(name)
        return None if path is None else LazySession(runtime, path, device, threads)

    files = {f"{k}_encoder": str(found.path(k)) for k in ("image", "text") if k in found.files}
    image, reference = session("image"), None
    if runtime == "openvino-int8":   # the quantised image encoder; the fp32 one stays for explanations
        from medmm.runtime.int8 import image_model

        model_file = image_model(found.path("image"), meta.preprocessing)
        image, reference = LazySession(runtime, model_file, device, threads), image
        files["image_encoder"] = str(model_file)
    encoders = EncoderRuntime(runtime, device, image=image, text=session("text"), text_dim=found.text_dim,
                              files=files, reference=reference)
    log.info("%s graphs of %s from %s", runtime, meta.weights_sha256[:12], folder)
    model = GraphModel(found, encoders, session("head"), session("gate") if gate is not None else None,
                       meta.preprocessing, meta.model.text_encoder if found.text_dim else None,
                       meta.model.text_max_tokens)
    encoders.graphs = model
    return model


__all__ = ["GraphModel", "graph_set_key", "int8_passes", "open_graphs"]
