"""``EncoderRuntime``: the two encoders under one runtime, for callers that hold torch tensors (explanations, the
image batcher, the bench), and ``build``, which exports them for a loaded torch model.

Importing this module is torch-free (the torch-free pipeline keeps its encoders here too); the tensor methods import
torch when called, which only a torch caller does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medmm.runtime import resolve
from medmm.runtime.sessions import open_session

if TYPE_CHECKING:
    import torch

@dataclass
class EncoderRuntime:
    """The pipeline's encoders under one runtime. ``image``/``text`` are None for torch (the model runs itself)."""

    name: str
    device: str = "cpu"
    image: Any = None                    # OrtSession | OvSession | LazySession
    text: Any = None
    text_dim: int | None = None          # width of the pooled embedding in the text graph's output (the rest: bag)
    # the fp32 image encoder when ``image`` is quantised (openvino-int8): explanations' forward-only passes use it
    reference: Any = None
    files: dict[str, str] = field(default_factory=dict)
    # the graph set these encoders belong to (medmm.runtime.graphs.GraphModel: the other forward-only stages too);
    # None for encoders exported for a loaded torch model (``build``)
    graphs: Any = field(default=None, repr=False, compare=False)

    @property
    def providers(self) -> list[str]:
        return ["torch:" + str(self.device)] if self.image is None else list(self.image.providers)

    # ---------------------------------------------------------------------------------------------- numpy
    def image_array(self, x: np.ndarray) -> np.ndarray:
        """``[N, 3, S, S]`` float32 -> ``[N, F]`` float32."""
        return self.image.run({"pixels": np.ascontiguousarray(x, dtype=np.float32)})

    def text_arrays(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(pooled [N, H], bag of words [N, D] or None)`` from int64 token ids and mask ``[N, T]``."""
        # contiguous copies where needed (an expanded attention mask has stride 0): OpenVINO reads them in place
        out = self.text.run({"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                             "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64)})
        if self.text_dim is None or out.shape[1] == self.text_dim:
            return out, None
        return out[:, :self.text_dim], out[:, self.text_dim:]

    # ---------------------------------------------------------------------------------------------- torch
    def encode_image_batch(self, x: "torch.Tensor") -> "torch.Tensor":
        """``[N, 3, S, S]`` -> ``[N, F]`` float32 on ``x``'s device."""
        import torch

        arr = x.detach().float().contiguous().cpu().numpy()  # NCHW, what the graph was exported with
        return torch.from_numpy(self.image_array(arr)).to(x.device)

    def encode_image_batch_reference(self, x: "torch.Tensor") -> "torch.Tensor":
        """As ``encode_image_batch`` through the fp32 graph (``reference``) when the image graph is quantised: what
        explanations use, so that no explanation reads an int8 graph."""
        import torch

        if self.reference is None:
            return self.encode_image_batch(x)
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.reference.run({"pixels": arr})).to(x.device)

    def encode_images(self, pixels: "torch.Tensor") -> "torch.Tensor":
        """``[B, V, 3, S, S]`` -> mean over views ``[B, F]`` (as ``MedMM.encode_images`` without a view mask)."""
        from medmm.models.model import pool_views, view_features

        return pool_views(view_features(self.encode_image_batch, pixels))

    def encode_text(self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor"
                    ) -> "tuple[torch.Tensor, torch.Tensor | None]":
        """``(pooled [N, H], bag of words [N, D] or None)`` for ``MedMM.join_text_features``."""
        import torch

        pooled, bag = self.text_arrays(input_ids.detach().cpu().numpy(), attention_mask.detach().cpu().numpy())
        pooled = torch.from_numpy(pooled).to(input_ids.device)
        return pooled, None if bag is None else torch.from_numpy(bag).to(input_ids.device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "providers": self.providers,
                "image_encoder": "torch" if self.image is None else self.name,
                "text_encoder": "torch" if self.text is None else self.name, "files": self.files,
                **({"explanations_image_encoder": "openvino"} if self.reference is not None else {})}


def build(runtime: str | None, model: Any, meta: Any, device: str = "cpu", *, folder: Path | None = None,
          threads: int | None = None, text: bool = True, quantise: bool = True) -> EncoderRuntime:
    """Resolve ``runtime`` and, for an ONNX runtime, export (cached) + open the image and text encoder graphs of a
    loaded torch ``model`` (this imports torch; the torch-free path opens a checkpoint's cached graph set instead,
    ``medmm.runtime.graphs``).

    ``meta.weights_sha256`` keys the image export. ``text=False`` keeps the text encoder in torch. ``quantise=False``:
    openvino-int8 opens a cached int8 model only (``int8.Int8Unavailable`` without one), never quantises one.
    """
    from medmm.runtime.export import export_image_encoder, export_text_encoder, state_fingerprint

    name = resolve(runtime, device)
    rt = EncoderRuntime(name, device)
    if name == "torch":
        return rt
    size = meta.preprocessing.input_size
    key_source = meta.weights_sha256 or state_fingerprint(model.image_encoder)
    img_path = export_image_encoder(model.image_encoder, key_source, size, folder)
    if name == "openvino-int8":   # the quantised model for predictions, the fp32 graph for explanations
        from medmm.runtime.int8 import image_model

        rt.reference = open_session(name, img_path, device, threads)
        img_path = image_model(img_path, meta.preprocessing, quantise)
    rt.image = open_session(name, img_path, device, threads)
    rt.files["image_encoder"] = str(img_path)
    if text and model.text_encoder is not None:  # sentence encoder (+ the model's bag of words) as one graph
        txt_path = export_text_encoder(model.text_encoder, folder, getattr(model, "bag_of_words", None))
        rt.text = open_session(name, txt_path, device, threads)
        rt.text_dim = model.text_encoder.dim
        rt.files["text_encoder"] = str(txt_path)
    return rt


def max_abs_diff(a: "torch.Tensor", b: "torch.Tensor") -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


__all__ = ["EncoderRuntime", "build", "max_abs_diff"]
