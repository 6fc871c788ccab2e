"""torch -> ONNX exports of every forward-only stage of a prediction (this module imports torch).

Four graphs, each written atomically (temporary file + rename) into the cache folder, so concurrent processes can
share it, and each named by a key over what it depends on (``export_key``), so a retrained checkpoint gets fresh
files and nothing checkpoint-dependent is committed:

* the image encoder (``[N, 3, S, S]`` -> ``[N, F]``), keyed by the checkpoint's weights sha256;
* the notes features before the expert's column (``_TextGraph``: the sentence encoder's pooled embedding plus, for
  a model with one, its trained bag of words over the same token embeddings), keyed by those weights;
* the input gate's features (``GateGraph``: the encoder's first stages, pooled; ``medmm.gate``);
* the fusion head on image features with the notes absent (``HeadGraph``: finding log-odds and, for a state head,
  the image's state probabilities: what ``Pipeline.predict`` reads of the model).

The TorchScript exporter is used (no onnxscript needed); BatchNorm is folded before export (``Pipeline``).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medmm.runtime import cache_dir

log = logging.getLogger(__name__)

OPSET = 17
# the fusion head's opset: OpenVINO's ONNX reader drops the ``axes`` attribute of opset 17's ReduceLogSumExp (the
# state head's logsumexp), reducing to a scalar; from opset 18 the axes are an input, which it reads
HEAD_OPSET = 18
EXPORT_VERSION = 2  # bump when the exported graphs change meaning (inputs, pooling, names)


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
            output_names: list[str], dynamic_axes: dict[str, dict[int, str]], opset: int = OPSET) -> Path:
    """``torch.onnx.export`` to ``path`` atomically; no-op if present."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer/deprecation warnings are noise in a server log
            torch.onnx.export(module, args, tmp, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False)
        os.chmod(tmp, 0o644)
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


class GateGraph(nn.Module):
    """The input gate's features (``InputGate.features``): the image encoder's first ``stages`` stages, then
    ``medmm.gate.feature_stats`` of their output."""

    def __init__(self, encoder: Any, stages: int, grid: int, input_size: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList([stage for _, stage in encoder.stages[:stages]])
        self.grid = grid
        with torch.no_grad():   # the feature map's size, which the tracer cannot see through timm's padding
            self.map_size = tuple(self._map(torch.zeros(1, 3, input_size, input_size)).shape[-2:])

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        from medmm.gate import feature_stats

        return feature_stats(self._map(pixels), self.grid, self.map_size)


class HeadGraph(nn.Module):
    """Image features ``[N, F]`` -> finding log-odds with the notes absent (``MedMM.forward_features(img, None)``)
    and, for a state head, the image's state probabilities (``MedMM.image_state_probs``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_feat: torch.Tensor):
        logits = self.model.forward_features(image_feat, None)
        if getattr(self.model, "state_head", None) is None:
            return logits
        return logits, self.model.image_state_probs(image_feat)


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


def export_gate(encoder: Any, gate: Any, key_source: str, input_size: int, folder: Path | None = None) -> Path:
    """ONNX of the input gate's features (``pixels [N, 3, S, S]`` -> ``features [N, D]``): see ``GateGraph``."""
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in encoder.model.modules())
    key = export_key("gate", encoder.name, key_source, input_size, n_bn, gate.stages, gate.grid)
    path = (folder or cache_dir()) / f"gate_{encoder.name}_{key}.onnx"
    if path.is_file():
        return path
    graph = GateGraph(copy.deepcopy(encoder).cpu().eval().to(memory_format=torch.contiguous_format), gate.stages,
                      gate.grid, input_size)
    x = torch.zeros(1, 3, input_size, input_size)
    return _export(graph, (x,), path, ["pixels"], ["features"], {"pixels": {0: "batch"}, "features": {0: "batch"}})


def export_head(model: nn.Module, key_source: str, folder: Path | None = None) -> Path:
    """ONNX of the fusion head on image features (``image_features [N, F]`` -> ``logits [N, K]`` and, for a state
    head, ``states [N, L]``): see ``HeadGraph``. The encoders are left out of the copy that is exported."""
    key = export_key("head", key_source, model.cfg.to_dict(), HEAD_OPSET)
    path = (folder or cache_dir()) / f"head_{key}.onnx"
    if path.is_file():
        return path
    # a copy without the encoders (deepcopy's memo maps them to None): the head's weights only
    memo = {id(m): None for m in (model.image_encoder, model.text_encoder) if m is not None}
    graph = HeadGraph(copy.deepcopy(model, memo).cpu().eval())
    outputs = ["logits"] + (["states"] if getattr(model, "state_head", None) is not None else [])
    x = torch.zeros(1, model.image_encoder.num_features)
    return _export(graph, (x,), path, ["image_features"], outputs,
                   {"image_features": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}, HEAD_OPSET)


__all__ = ["EXPORT_VERSION", "HEAD_OPSET", "OPSET", "GateGraph", "HeadGraph", "export_gate", "export_head", "export_image_encoder",
           "export_key", "export_text_encoder", "state_fingerprint"]
