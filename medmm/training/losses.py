"""Masked multi-label BCE (unknown labels ignored) and a CLIP-style InfoNCE loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE over known labels only; ``labels`` uses nan for unknown. ``[B, F]`` each; ``weight`` ``[B]``
    re-weights rows (a row of weight 0 teaches nothing)."""
    known = (~torch.isnan(labels)).to(logits.dtype)
    if weight is not None:
        known = known * weight[:, None]
    if not known.any():
        return logits.sum() * 0.0
    target = torch.nan_to_num(labels, nan=0.0)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=pos_weight)
    return (loss * known).sum() / known.sum()


class ClipLoss(nn.Module):
    """Symmetric InfoNCE between paired image and notes embeddings; learnable temperature initialised at 0.07."""

    def __init__(self, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:  # [N, D] each, paired by row
        if image.shape[0] < 2:
            return image.sum() * 0.0
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * image @ text.T
        target = torch.arange(image.shape[0], device=image.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def partial_label_nll(state_logits: torch.Tensor, allowed: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``-log P(true state in allowed set)`` under ``softmax(state_logits)``: what a partial label says.

    ``allowed`` ``[B, L]`` bool comes from ``labels.allowed_states`` (a known label rules states out, an unknown
    one rules nothing out). Rows that allow every state carry no information and are skipped; ``weight`` ``[B]``
    re-weights rows (de-confounding, source balance).
    """
    neg = torch.finfo(state_logits.dtype).min
    nll = torch.logsumexp(state_logits, -1) - torch.logsumexp(state_logits.masked_fill(~allowed, neg), -1)
    w = (~allowed.all(-1)).to(state_logits.dtype)
    if weight is not None:
        w = w * weight
    return (nll * w).sum() / w.sum().clamp_min(1e-6)
