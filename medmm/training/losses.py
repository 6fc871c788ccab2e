"""Training losses: the partial-label NLL over the output states and a CLIP-style InfoNCE loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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
