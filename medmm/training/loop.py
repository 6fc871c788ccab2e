"""The training loop: the image encoder's last blocks + the notes pathway + fusion + the state head trained with the
partial-label NLL (a missing label rules nothing out), de-confounding source weights, feature-map border masking,
modality dropout, AdamW and a cosine schedule; predictions of a trained model on the clean cached views.

Distributed (``torchrun``): DistributedDataParallel over the trainable part, each rank a DistributedSampler shard of
the same patient-grouped fold.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch
from torch import nn

from medmm.config import TrainConfig
from medmm.labels import LEAF_NAMES
from medmm.models.model import MedMM
from medmm.training.batches import Batch, Batcher, forward_batch
from medmm.training.losses import partial_label_nll

log = logging.getLogger("medmm.train")


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dist_info() -> tuple[int, int]:
    """(rank, world_size); initialises torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank() if world > 1 else 0), world


def pick_device(device: str | None, world: int) -> str:
    """``device`` or cuda when available, else cpu; under torchrun each rank its own GPU (``LOCAL_RANK``)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def trainable_parameters(model: MedMM, tail_blocks: int) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    encoder = model.image_encoder.tail_parameters(tail_blocks)
    heads = [p for n, p in model.named_parameters()
             if not n.startswith("image_encoder.") and not n.startswith("text_encoder.")]
    return encoder, heads


def _cosine_schedule(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = min(50, total // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup
        else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))


def train_model(model: MedMM, batcher: Batcher, train_idx: np.ndarray, cfg: TrainConfig, desc: str,
                show_progress: bool, rank: int = 0, world: int = 1) -> MedMM:
    """Train ``model`` in place on ``train_idx``."""
    from torch.utils.data import DistributedSampler
    from tqdm import tqdm

    seed = cfg.seed
    seed_everything(seed)
    model.requires_grad_(False)
    enc_params, head_params = trainable_parameters(model, cfg.finetune_blocks)
    for p in enc_params + head_params:
        p.requires_grad_(True)
    groups = [{"params": enc_params, "lr": cfg.encoder_lr}, {"params": head_params, "lr": cfg.lr}]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    ddp = None
    if world > 1:
        ddp = nn.parallel.DistributedDataParallel(_Trainable(model, cfg.finetune_blocks), find_unused_parameters=True)
    # torch's DistributedSampler (also with one replica): every rank gets an equal-length shard of the same
    # patient-grouped fold, reshuffled each epoch from the shared seed.
    sampler = DistributedSampler(range(len(train_idx)), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    sched = _cosine_schedule(opt, max(1, steps_per_epoch * cfg.epochs))
    # frozen BatchNorm statistics (ImageNet) in the encoder: cached features were computed in eval mode
    model.image_encoder.eval()
    for m in (model.image_proj, model.text_proj, model.fusion, model.head, model.bag_of_words):
        if m is not None:
            m.train()
    g = torch.Generator().manual_seed(seed + 17 * rank)
    use_amp = batcher.device.startswith("cuda")
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        perm = train_idx[np.fromiter(iter(sampler), dtype=np.int64)]
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", disable=not show_progress,
                   leave=False, mininterval=10)
        running = 0.0
        for step in bar:
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size].tolist()
            batch = batcher.get(idx, view="random", generator=g, modality_dropout=cfg.modality_dropout)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                states, img_feat = (ddp(batch, g) if ddp is not None else forward_batch(model, batch, cfg.finetune_blocks, g))
                loss = partial_label_nll(states.float(), batch.allowed, batch.weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
            bar.set_postfix(loss=f"{running:.4f}")
        log.info("%s epoch %d/%d: loss %.4f", desc, epoch + 1, cfg.epochs, running)
    model.eval()
    model.requires_grad_(False)
    return model


class _Trainable(nn.Module):
    """DDP wrapper around the trainable forward (module-holding so DDP can find its parameters)."""

    def __init__(self, model: MedMM, tail_blocks: int) -> None:
        super().__init__()
        self.model, self.tail_blocks = model, tail_blocks

    def forward(self, batch: Batch, generator: torch.Generator | None = None):
        return forward_batch(self.model, batch, self.tail_blocks, generator)


@torch.inference_mode()
def predict_states(model: MedMM, batcher: Batcher, idx: np.ndarray, cfg: TrainConfig,
                   drop: str | None = None) -> np.ndarray:
    """Raw state logits ``[n, L]`` on the clean views; nan rows where the drop leaves no modality."""
    out = []
    for s in range(0, len(idx), 256):
        batch = batcher.get(idx[s : s + 256].tolist(), view="clean", drop=drop)
        present = ((batch.has_img > 0) | (batch.has_txt > 0)).cpu().numpy()
        logits = np.full((len(present), len(LEAF_NAMES)), np.nan, np.float32)
        if present.any():
            logits[present] = forward_batch(model, batch, cfg.finetune_blocks)[0].float().cpu().numpy()[present]
        out.append(logits)
    return np.concatenate(out) if out else np.zeros((0, len(LEAF_NAMES)), np.float32)


@torch.inference_mode()
def image_embeddings(model: MedMM, batcher: Batcher, idx: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    feats = []
    for s in range(0, len(idx), 256):
        stems = torch.stack([batcher.image_cache[i][0] for i in idx[s : s + 256]]).float().to(batcher.device)
        stems = stems.contiguous(memory_format=torch.channels_last) if stems.dim() == 4 else stems
        feats.append(model.image_encoder.forward_tail(stems, cfg.finetune_blocks).float().cpu().numpy())
    return np.concatenate(feats)

