"""Copies of the model and the pipeline under test, so that no measurement or experiment changes the pipeline itself."""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from typing import Any

from torch import nn

log = logging.getLogger(__name__)


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


def own_caches(clone: Any) -> Any:
    """Give a shallow copy of a pipeline caches of its own (the notes' tokens and features) and their lock.

    A shallow copy shares the original's cache dicts; two pipelines writing one dict under two different locks race.
    """
    clone._text_cache, clone._tok_cache, clone._text_lock = OrderedDict(), OrderedDict(), threading.Lock()
    return clone


def pipeline_with_backbone(pipeline: Any, backbone: nn.Module) -> Any:
    """A shallow copy of ``pipeline`` whose model is a deep copy with ``backbone`` as the timm model (own caches)."""
    clone = own_caches(copy.copy(pipeline))
    clone.model = copy.deepcopy(pipeline.model)
    clone.model.image_encoder.model = backbone
    return clone
