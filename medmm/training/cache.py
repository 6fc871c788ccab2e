"""What is frozen is computed once per run and cached: the image encoder's early layers (one clean + ``aug_views``
augmented views per image, on disk under ``OUT/cache``) and the notes embeddings (the text encoder is frozen).
This is what makes cross-validation feasible on 2 CPU cores."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from medmm.config import ModelConfig, Preprocessing, TrainConfig
from medmm.io import load_scan
from medmm.models.model import MedMM
from medmm.models.transforms import radiograph_augment, to_model_input
from medmm.training.data import Record

log = logging.getLogger("medmm.train")


def cache_key(cfg: TrainConfig, model_cfg: ModelConfig, records: list[Record], aug_views: int) -> str:
    image_side = {k: model_cfg.to_dict()[k] for k in ("image_encoder", "image_weights")}  # what the cache depends on
    h = hashlib.sha256(json.dumps([image_side, cfg.input_size, cfg.finetune_blocks, aug_views, cfg.seed,
                                   [r.image for r in records]]).encode())
    return h.hexdigest()[:16]


@torch.inference_mode()
def build_image_cache(model: MedMM, records: list[Record], cfg: TrainConfig, prep: Preprocessing, aug_views: int,
                      cache_dir: Path, device: str, show_progress: bool) -> dict[int, torch.Tensor]:
    """Frozen early-layer features per image record: ``{record index: [1 + aug_views, C, h, w] float16}``."""
    from tqdm import tqdm

    key = cache_key(cfg, model.cfg, records, aug_views)
    path = cache_dir / f"stem_{key}.pt"
    if path.is_file():
        log.info("reusing cached image features %s", path)
        return torch.load(path, weights_only=True)
    derived = _derive_from_earlier_cut(model, records, cfg, aug_views, cache_dir, device)
    if derived is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        torch.save(derived, path)
        return derived
    idx = [i for i, r in enumerate(records) if r.image]
    out: dict[int, torch.Tensor] = {}
    batch_size = 32
    enc = model.image_encoder.eval()  # converted to channels_last by the caller (outside inference mode)
    for start in tqdm(range(0, len(idx), batch_size), desc="caching image features", disable=not show_progress):
        chunk = idx[start : start + batch_size]
        views = []
        for i in chunk:
            x = to_model_input(load_scan(records[i].image).pixels, prep)
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
            views += [x] + [radiograph_augment(x, g) for _ in range(aug_views)]
        x = torch.stack(views).to(device).contiguous(memory_format=torch.channels_last)
        feats = enc.forward_stem(x, cfg.finetune_blocks).half().cpu().contiguous()
        feats = feats.view(len(chunk), 1 + aug_views, *feats.shape[1:])
        out.update({i: f.clone() for i, f in zip(chunk, feats)})
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


@torch.inference_mode()
def _derive_from_earlier_cut(model: MedMM, records: list[Record], cfg: TrainConfig, aug_views: int, cache_dir: Path,
                             device: str) -> dict[int, torch.Tensor] | None:
    """A cache cut *earlier* in the network (more tail blocks) already on disk is advanced through the extra
    frozen blocks instead of decoding and encoding every image again (same images, views and seed)."""
    enc = model.image_encoder
    for earlier in range(len(enc.stages) - 2, cfg.finetune_blocks, -1):
        other = cache_dir / f"stem_{cache_key(replace(cfg, finetune_blocks=earlier), model.cfg, records, aug_views)}.pt"
        if not other.is_file():
            continue
        log.info("deriving the cache for %d tail block(s) from %s", cfg.finetune_blocks, other)
        cache = torch.load(other, weights_only=True)
        lo, hi = enc._split(earlier), enc._split(cfg.finetune_blocks)
        extra = nn.Sequential(*[stage for _, stage in enc.stages[lo:hi]]).eval()
        keys = list(cache)
        for s in range(0, len(keys), 32):  # batched, NHWC like the weights: small NCHW batches are ~10x slower
            chunk = keys[s : s + 32]
            x = torch.cat([cache[i] for i in chunk]).float().to(device)
            x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
            y = extra(x).half().cpu().contiguous().split([len(cache[i]) for i in chunk])
            cache.update({i: t.clone() for i, t in zip(chunk, y)})
        return cache
    return None


@dataclass
class TextCache:
    """Frozen notes features: mean-pooled encoder output, and the token ids the bag-of-words pathway reads."""

    pooled: torch.Tensor      # [N, 384] (zeros where a record has no notes)
    ids: torch.Tensor         # [N, T] int64 (0 where none)
    mask: torch.Tensor        # [N, T] int64
    expert: torch.Tensor | None = None  # [N] notes-expert logits of the current split (set per fit)


@torch.inference_mode()
def build_text_cache(model: MedMM, records: list[Record]) -> TextCache:
    enc = model.text_encoder
    idx = [i for i, r in enumerate(records) if r.notes]
    pooled = torch.zeros(len(records), enc.dim)
    tok = enc.tokenize([records[i].notes for i in idx]) if idx else {"input_ids": torch.zeros(0, 1, dtype=torch.long)}
    t = tok["input_ids"].shape[1]
    ids = torch.zeros(len(records), t, dtype=torch.long)
    mask = torch.zeros(len(records), t, dtype=torch.long)
    if idx:
        pooled[idx] = torch.from_numpy(enc.embed([records[i].notes for i in idx]))
        ids[idx], mask[idx] = tok["input_ids"], tok["attention_mask"]
    return TextCache(pooled, ids, mask)
