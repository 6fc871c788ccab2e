"""Side training script: ``python -m medmm.train [--out DIR] [--folds 5] ...``.

Reads top to bottom:
1. load records from the shared sources (and/or a manifest), relabelled onto FINDINGS with nan = unknown;
2. cache what is frozen: the image encoder's early layers (one clean + ``--aug-views`` augmented views per image)
   and the notes embeddings (the text encoder is frozen) — this is what makes CV feasible on 2 CPU cores;
3. patient-grouped, label-stratified k-fold CV: train the image encoder's last blocks + the bag-of-words notes
   pathway + fusion + a softmax over the mutually exclusive states of ``labels.LEAF_STATES`` with the
   partial-label NLL (a missing label rules nothing out), de-confounding weights, feature-map border masking,
   modality dropout, AdamW, cosine schedule; collect out-of-fold state logits for the full input and, where
   both exist, image-only and notes-only;
4. calibrate one state temperature and choose operating thresholds (a sensitivity target; COVID-19 also a
   specificity floor on adult non-COVID films) on the out-of-fold predictions; report AUC/F1/sensitivity/
   specificity per finding and per source with patient-bootstrap 95% CIs, and a TF-IDF baseline on the notes;
5. train the final model on all records, fit the out-of-distribution reference and the adult-scope check,
   save a checkpoint;
6. leave-one-source-out: train without each image source (both NIH sets count as one hospital) and test on it.

Resumable: each finished fold / left-out source is saved under ``OUT/folds``; cached features under ``OUT/cache``.
Distributed (``torchrun --nproc_per_node N -m medmm.train``): DistributedDataParallel over the trainable part,
each rank a DistributedSampler shard of the same patient-grouped fold; rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medmm.models.checkpoint import CheckpointMeta, OODReference, ScopeCheck, save_checkpoint
from medmm.config import RECIPES, ModelConfig, Preprocessing, TrainConfig
from medmm.training.data import Record, label_matrix, leave_one_source_out, load_records, patient_folds
from medmm.io import load_scan
from medmm.labels import FINDINGS, LEAF_NAMES, allowed_states, marginals
from medmm.training.losses import partial_label_nll
from medmm.training.metrics import (binary_metrics, expected_calibration_error, fit_state_temperature, roc_auc,
                           sensitivity_threshold, specificity_threshold, youden_threshold)
from medmm.models.model import MedMM, create_model
from medmm.models.transforms import radiograph_augment, to_model_input

log = logging.getLogger("medmm.train")


# ------------------------------------------------------------------------------------------------ setup
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


# ------------------------------------------------------------------------------------------------ caches
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


# ------------------------------------------------------------------------------------------------ batches
@dataclass
class Batch:
    stems: torch.Tensor | None   # [n_img, C, h, w] cached early-layer features of the image rows
    img_rows: list[int]
    pooled: torch.Tensor         # [B, 384]
    ids: torch.Tensor            # [B, T]
    mask: torch.Tensor           # [B, T]
    has_img: torch.Tensor        # [B] float
    has_txt: torch.Tensor        # [B] float
    allowed: torch.Tensor        # [B, L] bool: states consistent with the labels
    weight: torch.Tensor         # [B]
    expert: torch.Tensor | None = None  # [B] notes-expert logits


class Batcher:
    """Assembles training/eval batches from the caches (no image decoding in the training loop)."""

    def __init__(self, records: list[Record], image_cache: dict[int, torch.Tensor], text_cache: TextCache,
                 device: str, source_weights: dict[str, float] | None = None) -> None:
        self.labels = label_matrix(records)
        self.allowed = torch.from_numpy(allowed_states(self.labels))
        sw = source_weights or {}
        self.weight = torch.tensor([r.weight * sw.get(r.source, 1.0) for r in records], dtype=torch.float32)
        self.has_image = torch.tensor([r.image is not None for r in records])
        self.has_text = torch.tensor([r.notes is not None for r in records])
        self.image_cache, self.text, self.device = image_cache, text_cache, device
        self.sources = np.array([r.source for r in records])

    def get(self, idx: list[int], *, view: str, drop: str | None = None, generator: torch.Generator | None = None,
            modality_dropout: float = 0.0) -> Batch:
        """``view``: 'clean' or 'random' (a random cached view per image); ``drop``: force 'image' or 'notes' off;
        ``modality_dropout``: probability that a row with both hides one of them (either, equally often)."""
        has_img = self.has_image[idx].clone()
        has_txt = self.has_text[idx].clone()
        if drop == "image":
            has_img[:] = False
        elif drop == "notes":
            has_txt[:] = False
        if modality_dropout > 0:
            both = has_img & has_txt
            r = torch.rand(len(idx), generator=generator)
            side = torch.rand(len(idx), generator=generator) < 0.5
            dropped = both & (r < modality_dropout)
            has_img &= ~(dropped & side)
            has_txt &= ~(dropped & ~side)
        stems = None
        img_rows = [k for k, i in enumerate(idx) if has_img[k]]
        if img_rows:
            picks = []
            for k in img_rows:
                views = self.image_cache[idx[k]]
                v = 0 if view == "clean" else int(torch.randint(len(views), (1,), generator=generator))
                picks.append(views[v])
            stems = torch.stack(picks).float().to(self.device)
            if stems.dim() == 4:  # NHWC like the encoder weights: NCHW feature maps run several times slower
                stems = stems.contiguous(memory_format=torch.channels_last)
        tr = torch.tensor(idx)
        t = int(self.text.mask[tr].sum(1).max().clamp_min(1))  # trim padding to the batch's longest notes
        d = self.device
        return Batch(stems, img_rows, self.text.pooled[tr].to(d), self.text.ids[tr, :t].to(d),
                     self.text.mask[tr, :t].to(d), has_img.float().to(d), has_txt.float().to(d),
                     self.allowed[idx].to(d), self.weight[idx].to(d),
                     None if self.text.expert is None else self.text.expert[tr].to(d))


def mask_borders(stems: torch.Tensor, generator: torch.Generator, p: float = 0.5, max_frac: float = 0.12) -> torch.Tensor:
    """Zero a random band (up to ``max_frac`` of the side) on each edge of half the feature maps.

    Markers, collimation edges and burnt-in text sit on the image borders and differ by site; hiding them at
    random makes the tail learn from the lungs. Done on the cached feature maps, so it costs nothing per epoch.
    """
    n, _, h, w = stems.shape
    k = max(1, int(round(max_frac * h)))
    cut = torch.randint(0, k + 1, (n, 4), generator=generator)
    cut[torch.rand(n, generator=generator) >= p] = 0
    rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
    keep_r = (rows >= cut[:, :1]) & (rows < h - cut[:, 1:2])   # [n, h]
    keep_c = (cols >= cut[:, 2:3]) & (cols < w - cut[:, 3:4])  # [n, w]
    keep = (keep_r[:, :, None] & keep_c[:, None, :]).to(stems.device, stems.dtype)
    return stems * keep[:, None]


def forward_batch(model: MedMM, batch: Batch, tail_blocks: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """State logits ``[B, L]`` and the pooled image features (zeros for rows without an image)."""
    b, dev = batch.pooled.shape[0], batch.pooled.device
    img_feat = torch.zeros(b, model.image_encoder.num_features, device=dev)
    if batch.stems is not None:
        # border masking applies to feature maps (a ViT's cached tokens are left as they are)
        stems = batch.stems if generator is None or batch.stems.dim() != 4 else mask_borders(batch.stems, generator)
        img_feat = img_feat.index_copy(0, torch.tensor(batch.img_rows, device=dev),
                                       model.image_encoder.forward_tail(stems, tail_blocks).float())
    txt = notes_features(model, batch.pooled, batch.ids, batch.mask, batch.expert)
    return model.forward_states(img_feat, txt, batch.has_img, batch.has_txt), img_feat


def notes_features(model: MedMM, pooled: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                   expert: torch.Tensor | None) -> torch.Tensor:
    """``MedMM.join_text_features`` from the text cache: the cached sentence embedding, the bag of words over the
    token ids (trained, so computed here), the expert's logits."""
    bag = None if model.bag_of_words is None else model.bag_of_words(model.text_encoder.embeddings_layer()(ids), mask)
    return model.join_text_features(pooled, bag, expert)


# ------------------------------------------------------------------------------------------------ training
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


def state_probs(state_logits: np.ndarray, temperature: float) -> np.ndarray:
    z = state_logits / temperature
    z = z - np.max(np.nan_to_num(z, nan=0.0), axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


# ------------------------------------------------------------------------------------------------ evaluation
def calibrate(state_logits: np.ndarray, allowed: np.ndarray, folds: np.ndarray) -> tuple[float, np.ndarray]:
    """One state temperature (all OOF rows) and cross-fitted finding probabilities ``[N, F]``.

    Cross-fitting: fold k's probabilities use a temperature fitted on the other folds, so the reported ECE is
    not measured on the data the temperature was fitted to.
    """
    temperature = fit_state_temperature(state_logits, allowed)
    probs = np.full((len(state_logits), len(FINDINGS)), np.nan, np.float32)
    for k in np.unique(folds):
        m, other = folds == k, folds != k
        t_k = fit_state_temperature(state_logits[other], allowed[other])
        probs[m] = marginals(state_probs(state_logits[m], t_k))
    return temperature, probs


def choose_thresholds(probs: np.ndarray, labels: np.ndarray, sources: np.ndarray, target_sensitivity: float,
                      adult_specificity: float, reference: str | None = "kermany") -> tuple[dict[str, float], dict[str, str]]:
    """Per finding: the highest threshold that keeps ``target_sensitivity`` on out-of-fold predictions.

    The operating point is set on the ``reference`` source (the population the model is built for, pediatric
    Kermany) when it has at least 20 positives and 20 negatives for the finding, else on every source pooled: a
    pooled threshold is dragged down by the harder adult films and then gives away specificity on children.
    COVID-19 also needs ``adult_specificity`` among adult non-COVID films (the NIH sets, all pre-2020): without it, a
    threshold chosen where COVID-19 is trivially separable from children calls adults COVID-19.
    """
    thresholds, rules = {}, {}
    adult_non_covid = np.isin(sources, ["nih", "nih_sample"])
    for j, f in enumerate(FINDINGS):
        known = ~np.isnan(labels[:, j]) & ~np.isnan(probs[:, j])
        ref = known & (sources == reference)
        where = "all sources pooled"
        if reference and min((labels[ref, j] == 1).sum(), (labels[ref, j] == 0).sum()) >= 20:
            known, where = ref, f"{reference} films"
        y, p = labels[known, j], probs[known, j]
        if len(np.unique(y)) < 2:
            thresholds[f], rules[f] = 0.5, "default 0.5 (a single class in training)"
            continue
        t = sensitivity_threshold(y, p, target_sensitivity)
        rules[f] = f"sensitivity >= {target_sensitivity:g} on out-of-fold predictions ({where})"
        adult = adult_non_covid & ~np.isnan(labels[:, j]) & ~np.isnan(probs[:, j])
        if f == "COVID-19" and adult.sum() >= 20:
            t_adult = specificity_threshold(np.zeros(adult.sum()), probs[adult, j], adult_specificity)
            if t_adult > t:
                t, rules[f] = t_adult, f"specificity >= {adult_specificity:g} among adult non-COVID films (NIH, out-of-fold)"
        thresholds[f] = float(t)
    return thresholds, rules


def _block(labels: np.ndarray, groups: np.ndarray, mask: np.ndarray, j: int, p: np.ndarray, threshold: float,
           folds: np.ndarray | None = None, score: np.ndarray | None = None) -> dict | None:
    """Metrics of finding ``j`` on ``mask`` (AUC of ``score`` when given, e.g. 1 - p(No Finding))."""
    m = mask & ~np.isnan(labels[:, j]) & ~np.isnan(p)
    if m.sum() < 10 or len(np.unique(labels[m, j])) < 2:
        return None
    out = binary_metrics(labels[m, j], p[m], threshold, groups=groups[m])
    if score is not None:
        out["auc"] = binary_metrics(labels[m, j], score[m], 0.5, groups=groups[m])["auc"]
    if folds is not None:
        per_fold = [roc_auc(labels[m & (folds == k), j], p[m & (folds == k)]) for k in np.unique(folds)]
        per_fold = [a for a in per_fold if np.isfinite(a)]
        if per_fold:
            out["auc_folds_mean"], out["auc_folds_std"] = float(np.mean(per_fold)), float(np.std(per_fold))
    out["ece"] = expected_calibration_error(labels[m, j], p[m])
    return out


def source_metrics(records: list[Record], probs: np.ndarray, thresholds: dict, folds: np.ndarray | None = None) -> dict:
    """Per image source and finding: AUC, sensitivity/specificity at the stored thresholds, ECE."""
    labels = label_matrix(records)
    groups = np.array([r.patient_id for r in records])
    sources = np.array([r.source for r in records])
    has_image = np.array([r.image is not None for r in records])
    out: dict = {}
    for s in sorted(set(sources)):
        m = (sources == s) & has_image
        if not m.any():
            continue
        out[s] = {f: _block(labels, groups, m, j, probs[:, j], thresholds[f], folds) for j, f in enumerate(FINDINGS)}
        # normal vs any abnormality, scored by 1 - p(No Finding): what an adult screening question asks
        nf = FINDINGS.index("No Finding")
        abnormal = (1 - labels[:, nf])[:, None]
        out[s]["abnormal_vs_normal"] = _block(abnormal, groups, m, 0, 1 - probs[:, nf], 1 - thresholds["No Finding"],
                                              folds)
    return out


def expert_slope(features: np.ndarray, y: np.ndarray) -> float:
    """Logistic slope of the notes expert's cross-fitted word evidence against the labels: the log-odds per unit of
    evidence it earns on rows it never saw (its own fit is overconfident in-sample, cross-fitted it is not). The
    fusion adds ``expert_weight x evidence`` to the finding's state, so this is the weight that starts it
    calibrated instead of at an arbitrary 1.0 (where the rest of the notes pathway, trained jointly, drowned it:
    measured on the previous checkpoint's out-of-fold logits, MODEL_CARD)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, float)
    if len(np.unique(y)) < 2:
        return 1.0
    clf = LogisticRegression(C=1e4, max_iter=1000).fit(np.asarray(features, float).reshape(-1, 1), y)
    return float(max(clf.coef_[0, 0], 0.0))


def tfidf_baseline(records: list[Record], folds: np.ndarray, finding: str = "COVID-19", source: str = "covid") -> np.ndarray:
    """Out-of-fold TF-IDF + logistic regression on the notes of ``source`` (same folds): the bag-of-words anchor."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    j = FINDINGS.index(finding)
    labels = label_matrix(records)
    rows = np.array([r.source == source and r.notes is not None and not np.isnan(r.labels[j]) for r in records])
    out = np.full(len(records), np.nan)
    notes = np.array([r.notes or "" for r in records], dtype=object)
    for k in np.unique(folds):
        tr, va = rows & (folds != k), rows & (folds == k)
        if va.sum() == 0 or len(np.unique(labels[tr, j])) < 2:
            continue
        clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                            LogisticRegression(C=10.0, max_iter=2000))
        clf.fit(list(notes[tr]), labels[tr, j])
        out[va] = clf.predict_proba(list(notes[va]))[:, 1]
    return out


def evaluate_oof(records: list[Record], folds: np.ndarray, oof: dict[str, np.ndarray], temperature: float,
                 thresholds: dict, probs: np.ndarray) -> dict:
    """Per-finding metrics with patient-bootstrap CIs, per-fold mean ± std, per source, modality comparison."""
    labels = label_matrix(records)
    groups = np.array([r.patient_id for r in records])
    sources = np.array([r.source for r in records])
    everyone = np.ones(len(records), bool)
    result: dict = {"findings": {f: _block(labels, groups, everyone, j, probs[:, j], thresholds[f], folds)
                                 for j, f in enumerate(FINDINGS)},
                    "sources": source_metrics(records, probs, thresholds, folds), "subsets": {}}
    pj, cj = FINDINGS.index("Pneumonia"), FINDINGS.index("COVID-19")
    result["subsets"]["kermany_pneumonia_vs_normal_image_only"] = _block(labels, groups, sources == "kermany", pj,
                                                                          probs[:, pj], thresholds["Pneumonia"], folds)
    # COVID collection with notes: image-only vs notes-only vs both vs TF-IDF (same rows, same folds)
    both = (sources == "covid") & np.array([r.notes is not None and r.image is not None for r in records])
    for cond in ("full", "image_only", "notes_only"):
        p = marginals(state_probs(oof[cond], temperature))[:, cj]
        result["subsets"][f"covid_with_notes_covid19_{cond}"] = _block(labels, groups, both, cj, p,
                                                                        thresholds["COVID-19"], folds)
    tfidf = tfidf_baseline(records, folds)
    result["subsets"]["covid_with_notes_covid19_tfidf_baseline"] = _block(labels, groups, both, cj, tfidf, 0.5, folds)
    adult = np.isin(sources, ["nih", "nih_sample"]) & ~np.isnan(probs[:, cj])
    if adult.any():
        result["subsets"]["covid19_called_among_adult_non_covid"] = {
            "n": int(adult.sum()), "rate": float((probs[adult, cj] >= thresholds["COVID-19"]).mean())}
    return result


# ------------------------------------------------------------------------------------------------ scope
def fit_scope(embeddings: np.ndarray, sources: np.ndarray, groups: np.ndarray) -> tuple[ScopeCheck, dict[str, float]]:
    """Adult-vs-pediatric logistic regression on image embeddings; the rate it fires per source (grouped CV)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict

    adult = (sources != "kermany").astype(int)
    clf = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced")
    if len(np.unique(adult)) < 2:
        return ScopeCheck.constant(embeddings.shape[1], bool(adult[0])), {}
    n_splits = min(5, len(np.unique(groups)))
    p = cross_val_predict(clf, embeddings, adult, groups=groups, cv=GroupKFold(n_splits), method="predict_proba")[:, 1]
    clf.fit(embeddings, adult)
    rates = {s: float((p[sources == s] >= 0.5).mean()) for s in sorted(set(sources))}
    return ScopeCheck(clf.coef_[0].astype(np.float32), float(clf.intercept_[0])), rates


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, TrainConfig]:
    ap = argparse.ArgumentParser(prog="python -m medmm.train", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    recipes = "; ".join(f"{name}: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in r.items())
                        for name, r in RECIPES.items())
    ap.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                    help=f"start from a named recipe (options given here override it). {recipes}")
    ap.add_argument("--out", default="runs/default", help="output folder (checkpoint, metrics, caches)")
    ap.add_argument("--sources", default=",".join(d.sources),
                    help="comma list of kermany,covid,iu,nih,nih_sample ('' for none)")
    ap.add_argument("--manifest", default=None, help="CSV with image,notes,patient_id and one column per finding")
    ap.add_argument("--folds", type=int, default=d.folds, help="k for patient-grouped CV (0: no CV, final fit only)")
    ap.add_argument("--loso", action="store_true", help="also run leave-one-source-out (train without each image source)")
    ap.add_argument("--loso-epochs", type=int, default=None, help="epochs of the leave-one-source-out runs (default --epochs)")
    ap.add_argument("--epochs", type=int, default=d.epochs, help="training epochs per fit")
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="rows per training step")
    ap.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate of the fusion and heads")
    ap.add_argument("--encoder-lr", type=float, default=d.encoder_lr,
                    help="AdamW learning rate of the image encoder's trained tail")
    ap.add_argument("--finetune-blocks", type=int, default=d.finetune_blocks,
                    help="last N backbone stages trained (+ the head conv); earlier ones frozen and cached")
    ap.add_argument("--image-encoder", default=ModelConfig.image_encoder, help="timm name (efficientnet, densenet, vit)")
    ap.add_argument("--no-pretrained", action="store_true", help="random image-encoder weights (tests, smoke runs)")
    ap.add_argument("--bag-of-words-dim", type=int, default=d.bag_of_words_dim,
                    help="size of a trained bag of words over the notes' tokens fed to the fusion (0: none)")
    ap.add_argument("--sentence-embedding", action=argparse.BooleanOptionalAction, default=d.sentence_embedding,
                    help="feed the frozen sentence embedding of the notes to the fusion (--no-sentence-embedding: bag "
                         "of words and notes expert only)")
    ap.add_argument("--notes-expert", default=d.notes_expert,
                    help="finding of the TF-IDF + logistic-regression notes expert fed to the fusion ('' for none)")
    ap.add_argument("--source-weights", type=_source_weights,
                    default=",".join(f"{k}={v:g}" for k, v in d.source_weights.items()),
                    help="loss weight per source, e.g. nih=2,nih_sample=4,covid=1.5 (unnamed sources: 1)")
    ap.add_argument("--aug-views", type=int, default=2, help="augmented cached views per image (plus one clean)")
    ap.add_argument("--modality-dropout", type=float, default=d.modality_dropout,
                    help="probability that a row with image and notes hides one of them during training")
    ap.add_argument("--target-sensitivity", type=float, default=d.target_sensitivity,
                    help="operating point per finding: highest threshold reaching this out-of-fold sensitivity")
    ap.add_argument("--adult-specificity", type=float, default=d.adult_specificity,
                    help="COVID-19 threshold also keeps this specificity among adult non-COVID (NIH) films")
    ap.add_argument("--limit-per-source", type=int, default=None, help="subsample each source (smoke runs)")
    ap.add_argument("--seed", type=int, default=d.seed, help="folds, data order, augmentation and initial weights")
    ap.add_argument("--checkpoint-out", default=None, help="where to write the final checkpoint (default OUT/checkpoint)")
    ap.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    recipe = ap.parse_known_args(argv)[0].recipe
    if recipe:
        ap.set_defaults(**RECIPES[recipe])
    args = ap.parse_args(argv)
    cfg = replace(d, sources=tuple(s for s in args.sources.split(",") if s), manifest=args.manifest,
                  folds=args.folds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  encoder_lr=args.encoder_lr, finetune_blocks=args.finetune_blocks,
                  modality_dropout=args.modality_dropout,
                  target_sensitivity=args.target_sensitivity, adult_specificity=args.adult_specificity,
                  seed=args.seed, limit_per_source=args.limit_per_source, bag_of_words_dim=args.bag_of_words_dim,
                  sentence_embedding=args.sentence_embedding, notes_expert=args.notes_expert or None,
                  source_weights=args.source_weights if isinstance(args.source_weights, dict)
                  else _source_weights(args.source_weights))
    return args, cfg


def recipe_config(args: argparse.Namespace, cfg: TrainConfig) -> dict:
    """What a checkpoint stores of the settings that trained it (``training.config``), with the recipe's name."""
    return cfg.to_dict() | {"aug_views": args.aug_views, "image_encoder": args.image_encoder,
                            "loso": bool(args.loso), "loso_epochs": args.loso_epochs, "recipe": args.recipe}


def _source_weights(text: str) -> dict[str, float]:
    """``"nih=2,covid=1.5"`` -> ``{"nih": 2.0, "covid": 1.5}`` (argparse type; a clear error on a bad pair)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"source weight {part!r} is not NAME=NUMBER") from None
        if not sep or not name.strip() or out[name.strip()] < 0:
            raise argparse.ArgumentTypeError(f"source weight {part!r} is not NAME=NUMBER (number >= 0)")
    return out


class Run:
    """What every training step of one run shares: records, caches, the model and its initial weights."""

    def __init__(self, args: argparse.Namespace, cfg: TrainConfig, rank: int, world: int, device: str) -> None:
        self.args, self.cfg, self.rank, self.world, self.device = args, cfg, rank, world, device
        self.show = not args.no_progress and rank == 0
        self.out = Path(args.out)
        (self.out / "folds").mkdir(parents=True, exist_ok=True)
        self.records = load_records(cfg.sources, cfg.manifest, cfg.limit_per_source, cfg.seed)
        if not self.records:
            raise SystemExit("no training records")
        self.model_cfg = ModelConfig(image_encoder=args.image_encoder, num_findings=len(FINDINGS), output="states",
                                     bag_of_words_dim=cfg.bag_of_words_dim,
                                     sentence_embedding=cfg.sentence_embedding, notes_expert=cfg.notes_expert,
                                     image_weights=None if args.no_pretrained else ModelConfig.image_weights)
        # channels_last: ~2x faster convolutions on CPU; set here, not under inference_mode, so the
        # parameters stay ordinary (trainable) tensors
        self.model = create_model(self.model_cfg, pretrained=not args.no_pretrained).to(device)
        self.model.image_encoder.to(memory_format=torch.channels_last)
        pcfg = self.model.image_encoder.pretrained_cfg
        self.prep = Preprocessing(input_size=cfg.input_size, mean=tuple(pcfg.get("mean", (0.5,) * 3)),
                                  std=tuple(pcfg.get("std", (0.5,) * 3)))
        if world > 1 and rank != 0:
            torch.distributed.barrier()  # rank 0 builds and saves the cache first; the others then read it
        image_cache = build_image_cache(self.model, self.records, cfg, self.prep, args.aug_views, self.out / "cache",
                                        device, self.show)
        if world > 1 and rank == 0:
            torch.distributed.barrier()
        self.batcher = Batcher(self.records, image_cache, build_text_cache(self.model, self.records), device,
                               cfg.source_weights)
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items() if not k.startswith("text_encoder.")}
        self.labels = label_matrix(self.records)
        self.sources = np.array([r.source for r in self.records])
        self.groups = np.array([r.patient_id for r in self.records])
        # what a saved fold's predictions depend on: the cached images, the training settings and the architecture
        self.run_key = (cache_key(cfg, self.model_cfg, self.records, args.aug_views)
                        + json.dumps(cfg.to_dict(), sort_keys=True) + json.dumps(self.model_cfg.to_dict(), sort_keys=True))
        self.expert_weight = 1.0  # the notes expert's starting weight for the current split (set_notes_expert)

    def set_notes_expert(self, train_idx: np.ndarray, test_idx: np.ndarray):
        """Expert logits for this split: cross-fitted on the training rows, from the training-rows expert on the
        test rows; returns that expert (None when the recipe has none)."""
        from medmm.models.notes_expert import NotesExpert, cross_fitted_features

        if not self.cfg.notes_expert:
            return None
        j = FINDINGS.index(self.cfg.notes_expert)
        notes = [r.notes for r in self.records]
        # fitted only on sources whose notes carry both classes of the finding (the COVID collection): with the IU
        # indications (all COVID-19 negative) in, the expert learns which collection a note comes from instead of
        # the words that separate COVID-19 from other pneumonias (measured: AUC 0.71 vs 0.84 inside the collection)
        y = self.labels[:, j].copy()
        both = {s for s in set(self.sources) if len(np.unique(y[(self.sources == s) & ~np.isnan(y)])) == 2}
        y[~np.isin(self.sources, sorted(both))] = np.nan
        vec = np.zeros(len(self.records), np.float32)
        vec[train_idx] = cross_fitted_features([notes[i] for i in train_idx], y[train_idx], self.groups[train_idx],
                                             self.cfg.notes_expert, seed=self.cfg.seed)
        known = [i for i in train_idx if notes[i] is not None and not np.isnan(y[i])]
        expert = NotesExpert.fit([notes[i] for i in known], y[known], self.cfg.notes_expert) if known else None
        if expert is not None and len(test_idx):
            vec[test_idx] = expert.features([notes[i] for i in test_idx])
        has_notes = np.array([n is not None for n in notes])
        self.batcher.text.expert = torch.from_numpy(np.where(has_notes, vec, 0.0).astype(np.float32))
        # the expert's weight starts at the logistic slope of its cross-fitted evidence on the training rows
        self.expert_weight = expert_slope(vec[known], y[known]) if known else 1.0
        log.info("notes expert weight starts at %.3f", self.expert_weight)
        return expert

    def fresh_model(self) -> MedMM:
        self.model.load_state_dict(self.initial, strict=False)
        if hasattr(self.model, "expert_weight"):  # where set_notes_expert put it for this split
            with torch.no_grad():
                self.model.expert_weight.fill_(self.expert_weight)
        return self.model

    def train(self, train_idx: np.ndarray, desc: str) -> MedMM:
        """The model of one split, trained from the run's initial weights."""
        return train_model(self.fresh_model(), self.batcher, train_idx, self.cfg, desc, self.show, self.rank,
                           self.world)

    def predict(self, m: MedMM, test_idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"full": predict_states(m, self.batcher, test_idx, self.cfg),
                "image_only": predict_states(m, self.batcher, test_idx, self.cfg, drop="notes"),
                "notes_only": predict_states(m, self.batcher, test_idx, self.cfg, drop="image")}

    def fit_and_predict(self, name: str, train_idx: np.ndarray, test_idx: np.ndarray, desc: str) -> tuple[dict, dict]:
        """Train on ``train_idx``, predict ``test_idx`` (full / image only / notes only); resumable from OUT/folds."""
        from medmm.energy import EnergyMeter

        path = self.out / "folds" / f"{name}.npz"
        if path.is_file():  # resume: only the same records, split and settings
            saved = np.load(path)
            if np.array_equal(saved["val_idx"], test_idx) and str(saved.get("run_key", "")) == self.run_key:
                log.info("%s: resumed from %s", name, path)
                return {c: saved[c] for c in ("full", "image_only", "notes_only")}, json.loads(str(saved["energy"]))
        self.set_notes_expert(train_idx, test_idx)
        with EnergyMeter() as meter:
            m = self.train(train_idx, desc)
            preds = self.predict(m, test_idx)
        energy = meter.record.to_dict()
        if self.rank == 0:
            np.savez(path, val_idx=test_idx, energy=json.dumps(energy), run_key=self.run_key, **preds)
        return preds, energy


def cross_validate(run: Run) -> tuple[dict, float, dict, dict, list[dict]]:
    """k-fold patient-grouped CV -> (metrics, temperature, thresholds, threshold rules, energy per fold)."""
    cfg, records = run.cfg, run.records
    folds = patient_folds(records, cfg.folds, cfg.seed)
    oof = {c: np.full((len(records), len(LEAF_NAMES)), np.nan, np.float32) for c in ("full", "image_only", "notes_only")}
    energy = []
    for k in range(cfg.folds):
        val_idx, train_idx = np.where(folds == k)[0], np.where(folds != k)[0]
        preds, e = run.fit_and_predict(f"fold{k}", train_idx, val_idx, f"fold {k + 1}/{cfg.folds}")
        for c in oof:
            oof[c][val_idx] = preds[c]
        energy.append(e)
        p = marginals(state_probs(preds["full"], 1.0))[:, 1]
        known = ~np.isnan(run.labels[val_idx, 1])
        log.info("fold %d: Pneumonia AUC %.4f (%d val records), energy %.0f J (%s)", k,
                 roc_auc(run.labels[val_idx, 1][known], p[known]), len(val_idx), e["joules"], e["method"])
    allowed = allowed_states(run.labels)
    temperature, probs = calibrate(oof["full"], allowed, folds)
    thresholds, rules = choose_thresholds(probs, run.labels, run.sources, cfg.target_sensitivity, cfg.adult_specificity)
    metrics = evaluate_oof(records, folds, oof, temperature, thresholds, probs)
    metrics.update(folds=cfg.folds, temperature=temperature)
    if run.rank == 0:
        np.savez(run.out / "oof.npz", folds=folds, labels=run.labels, probs=probs, sources=run.sources,
                 patients=np.array([r.patient_id for r in records]), **oof)
    return metrics, temperature, thresholds, rules, energy


def leave_sources_out(run: Run, temperature: float, thresholds: dict) -> dict:
    """Train without each image source, test on it; metrics at the stored temperature and thresholds."""
    results = {}
    if run.args.loso_epochs:
        run.cfg = replace(run.cfg, epochs=run.args.loso_epochs)
        run.run_key += f"|loso_epochs={run.args.loso_epochs}"
    for source, train_idx, test_idx in leave_one_source_out(run.records):
        preds, energy = run.fit_and_predict(f"loso_{source}", train_idx, test_idx, f"without {source}")
        probs = np.full((len(run.records), len(FINDINGS)), np.nan, np.float32)
        probs[test_idx] = marginals(state_probs(preds["full"], temperature))
        results[source] = {s: res for s, res in source_metrics(run.records, probs, thresholds).items()
                           if s in set(run.sources[test_idx])}
        results[source]["trained_on"] = sorted(str(s) for s in set(run.sources[train_idx]))
        if source == "covid":
            cj = FINDINGS.index("COVID-19")
            labels, groups = run.labels, np.array([r.patient_id for r in run.records])
            both = (run.sources == "covid") & np.array([r.notes is not None for r in run.records])
            for cond in ("full", "image_only", "notes_only"):
                p = np.full(len(run.records), np.nan)
                p[test_idx] = marginals(state_probs(preds[cond], temperature))[:, cj]
                results[source][f"covid19_with_notes_{cond}"] = _block(labels, groups, both, cj, p, thresholds["COVID-19"])
        log.info("left out %s: %s", source, _short(results[source]))
    return results


def _short(res: dict, prefix: str = "") -> str:
    parts = []
    for key, blk in res.items():
        if isinstance(blk, dict) and isinstance(blk.get("auc"), dict):
            parts.append(f"{prefix}{key} AUC {blk['auc']['value']:.3f}")
        elif isinstance(blk, dict):
            parts.append(_short(blk, f"{key}/"))
    return ", ".join(p for p in parts if p)


def fit_final(run: Run) -> tuple[MedMM, OODReference | None, ScopeCheck | None, dict]:
    """The shipped model: trained on every record, with its out-of-distribution reference and scope check."""
    expert = run.set_notes_expert(np.arange(len(run.records)), np.array([], dtype=np.int64))
    final = run.train(np.arange(len(run.records)), "final")
    final.notes_expert = expert
    img_idx = np.array([i for i, r in enumerate(run.records) if r.image])
    if len(img_idx) <= 10:
        return final, None, None, {}
    emb = image_embeddings(final, run.batcher, img_idx, run.cfg)
    groups = np.array([run.records[i].patient_id for i in img_idx])
    scope, rates = fit_scope(emb, run.sources[img_idx], groups)
    return final, OODReference.fit(emb), scope, rates


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rank, world = dist_info()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    seed_everything(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    from medmm.energy import EnergyMeter

    t0 = time.time()
    total_meter = EnergyMeter(split=False)  # the folds' meters nest inside; do not share with them
    total_meter.__enter__()
    run = Run(args, cfg, rank, world, device)
    log.info("caches ready in %.0f s (%d records)", time.time() - t0, len(run.records))
    metrics, energy_folds = {}, []
    temperature, thresholds = 1.0, {f: 0.5 for f in FINDINGS}
    rules = {f: "default 0.5 (no cross-validation)" for f in FINDINGS}
    if cfg.folds >= 2:
        metrics, temperature, thresholds, rules, energy_folds = cross_validate(run)
    final, ood, scope, scope_rates = fit_final(run)
    final.state_head.temperature.fill_(temperature)
    total_meter.__exit__(None, None, None)
    _write_rank_summary(run.out, rank, final, metrics)
    if rank != 0:
        return 0
    summary = {
        "records": {str(s): int(sum(r.source == s for r in run.records)) for s in sorted(set(run.sources))},
        "patients": len({r.patient_id for r in run.records}),
        "config": recipe_config(args, cfg),
        "command": "python -m medmm.train " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "energy": {"total": total_meter.record.to_dict(), "folds": energy_folds},
        "duration_s": round(time.time() - t0, 1), "state_temperature": temperature, "threshold_rules": rules,
    }
    if scope is not None:
        scope.rates = scope_rates
        scope.adult_auc = _adult_auc(metrics)
    meta = CheckpointMeta(model=run.model_cfg, preprocessing=run.prep, findings=FINDINGS,
                          temperatures={f: 1.0 for f in FINDINGS}, thresholds=thresholds, trained=True, name=run.out.name,
                          operating_point="; ".join(f"{f}: {r}" for f, r in rules.items()),
                          training=summary, metrics=_headline(metrics),
                          notes_expert=None if final.notes_expert is None else final.notes_expert.to_dict())
    ckpt = save_checkpoint(args.checkpoint_out or run.out / "checkpoint", final, meta, ood, scope)
    _write_metrics(run.out, metrics, summary)
    log.info("checkpoint written to %s; metrics in %s", ckpt, run.out / "metrics.json")
    if args.loso:
        metrics["leave_one_source_out"] = leave_sources_out(run, temperature, thresholds)
        summary["duration_with_loso_s"] = round(time.time() - t0, 1)
        _write_metrics(run.out, metrics, summary)
    _print_summary(metrics, summary)
    return 0


def _adult_auc(metrics: dict) -> dict | None:
    """The figure the adult-scope warning quotes: normal-vs-abnormal AUC on NIH films that span the archive."""
    blk = ((metrics.get("sources") or {}).get("nih_sample") or {}).get("abnormal_vs_normal")
    if not blk:
        return None
    return {"auc": blk["auc"]["value"], "ci95": blk["auc"]["ci95"], "n": blk["n"],
            "population": "unseen NIH ChestX-ray14 patients (out-of-fold), normal vs any of 14 findings"}


def _write_metrics(out: Path, metrics: dict, summary: dict) -> None:
    (out / "metrics.json").write_text(json.dumps({"metrics": metrics, "training": summary}, indent=2, default=float))


def _print_summary(metrics: dict, summary: dict) -> None:
    """A few lines a person reads at the end of a run (the full tables are in metrics.json)."""
    lines = [f"trained on {summary['records']} in {summary['duration_s']:.0f} s"]
    for name, blk in (metrics.get("findings") or {}).items():
        if blk:
            lines.append(f"  {name:<20} AUC {blk['auc']['value']:.3f}  sens {blk['sensitivity']['value']:.3f}  "
                         f"spec {blk['specificity']['value']:.3f}  (out-of-fold, n={blk['n']})")
    for source, res in (metrics.get("leave_one_source_out") or {}).items():
        lines.append(f"  left out {source}: {_short(res)}")
    print("\n".join(lines))


def _write_rank_summary(out: Path, rank: int, model: MedMM, metrics: dict) -> None:
    """Per-rank fingerprint of the result (final weights + metrics), so distributed runs can show agreement."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if not k.startswith("text_encoder."):
            h.update(k.encode())
            h.update(v.detach().float().cpu().numpy().round(5).tobytes())
    summary = {"rank": rank, "weights_sha256": h.hexdigest(),
               "pneumonia_auc": ((metrics.get("findings") or {}).get("Pneumonia") or {}).get("auc")}
    (out / f"rank{rank}.json").write_text(json.dumps(summary, indent=2, default=float))


def _headline(metrics: dict) -> dict:
    """The few numbers worth carrying inside the checkpoint JSON."""
    out = {}
    for name, res in (metrics.get("findings") or {}).items():
        if res:
            out[name] = {k: res[k] for k in ("auc", "sensitivity", "specificity", "f1", "ece", "n")}
    for name, res in (metrics.get("subsets") or {}).items():
        if res:
            out[name] = {k: res[k] for k in ("auc", "sensitivity", "specificity", "f1", "n", "rate") if k in res}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
