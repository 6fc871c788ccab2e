"""Training losses: the partial-label NLL over the output states."""

from __future__ import annotations

import torch


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
