"""Side training script: ``python -m medmm.train [--out DIR] [--folds 5] ...``.

Reads top to bottom:
1. load records from the shared sources (and/or a manifest), relabelled onto FINDINGS with nan = unknown;
2. cache what is frozen: the image encoder's early layers (one clean + ``--aug-views`` augmented views per image)
   and the notes embeddings (the text encoder is frozen) — this is what makes CV feasible on 2 CPU cores;
3. patient-grouped, label-stratified k-fold CV: train the image encoder's last block(s) + fusion + head with
   masked BCE (+ optional InfoNCE), modality dropout, AdamW, cosine schedule; collect out-of-fold logits
   for the full input and, where both exist, image-only and notes-only;
4. calibrate per-finding temperatures and choose operating thresholds on the out-of-fold predictions;
   report AUC/F1/sensitivity/specificity with patient-bootstrap 95% CIs and mean ± std over folds;
5. train the final model on all records, fit the out-of-distribution reference, save a checkpoint.

Resumable: each finished fold is saved under ``OUT/folds``; cached features under ``OUT/cache``.
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
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medmm.checkpoint import CheckpointMeta, OODReference, save_checkpoint
from medmm.config import ModelConfig, Preprocessing, TrainConfig
from medmm.data import Record, label_matrix, load_records, patient_folds
from medmm.io import load_scan
from medmm.labels import FINDINGS
from medmm.losses import ClipLoss, masked_bce
from medmm.metrics import (binary_metrics, expected_calibration_error, fit_temperature, roc_auc,
                           sensitivity_threshold, youden_threshold)
from medmm.model import MedMM, create_model
from medmm.transforms import radiograph_augment, to_model_input

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
    h = hashlib.sha256(json.dumps([model_cfg.to_dict(), cfg.input_size, cfg.finetune_blocks, aug_views, cfg.seed,
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
    blocks = model.image_encoder.model.blocks
    for earlier in range(len(blocks), cfg.finetune_blocks, -1):
        other = cache_dir / f"stem_{cache_key(replace(cfg, finetune_blocks=earlier), model.cfg, records, aug_views)}.pt"
        if not other.is_file():
            continue
        log.info("deriving the cache for %d tail block(s) from %s", cfg.finetune_blocks, other)
        cache = torch.load(other, weights_only=True)
        extra = blocks[len(blocks) - earlier : len(blocks) - cfg.finetune_blocks].eval()
        keys = list(cache)
        for s in range(0, len(keys), 32):  # batched, NHWC like the weights: small NCHW batches are ~10x slower
            chunk = keys[s : s + 32]
            x = torch.cat([cache[i] for i in chunk]).float().to(device).contiguous(memory_format=torch.channels_last)
            y = extra(x).half().cpu().contiguous().split([len(cache[i]) for i in chunk])
            cache.update({i: t.clone() for i, t in zip(chunk, y)})
        return cache
    return None


@torch.inference_mode()
def build_text_cache(model: MedMM, records: list[Record]) -> torch.Tensor:
    """``[N, 384]`` frozen notes embeddings (zeros where a record has no notes)."""
    emb = torch.zeros(len(records), model.text_encoder.dim)
    idx = [i for i, r in enumerate(records) if r.notes]
    if idx:
        emb[idx] = torch.from_numpy(model.text_encoder.embed([records[i].notes for i in idx]))
    return emb


# ------------------------------------------------------------------------------------------------ batches
class Batcher:
    """Assembles training/eval batches from the caches (no image decoding in the training loop)."""

    def __init__(self, records: list[Record], image_cache: dict[int, torch.Tensor], text_cache: torch.Tensor,
                 device: str) -> None:
        self.labels = torch.from_numpy(label_matrix(records))
        self.has_image = torch.tensor([r.image is not None for r in records])
        self.has_text = torch.tensor([r.notes is not None for r in records])
        self.image_cache, self.text_cache, self.device = image_cache, text_cache, device
        self.stem_shape = next(iter(image_cache.values())).shape[1:] if image_cache else None

    def get(self, idx: list[int], *, view: str, drop: str | None = None, generator: torch.Generator | None = None,
            modality_dropout: float = 0.0):
        """``view``: 'clean' or 'random' (a random cached view per image); ``drop``: force 'image' or 'notes' off."""
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
        return (stems, img_rows, self.text_cache[idx].to(self.device), has_img.float().to(self.device),
                has_txt.float().to(self.device), self.labels[idx].to(self.device))


def forward_batch(model: MedMM, batch, tail_blocks: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits ``[B, F]`` and the projected image features of image rows (for the contrastive loss)."""
    stems, img_rows, txt, has_img, has_txt, _ = batch
    b = txt.shape[0]
    img_feat = torch.zeros(b, model.image_encoder.num_features, device=txt.device)
    if stems is not None:
        img_feat = img_feat.index_copy(0, torch.tensor(img_rows, device=txt.device),
                                       model.image_encoder.forward_tail(stems, tail_blocks))
    return model.forward_features(img_feat, txt, has_img, has_txt), img_feat


# ------------------------------------------------------------------------------------------------ training
def trainable_parameters(model: MedMM, tail_blocks: int) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    encoder = model.image_encoder.tail_parameters(tail_blocks)
    heads = [p for n, p in model.named_parameters()
             if not n.startswith("image_encoder.") and not n.startswith("text_encoder.")]
    return encoder, heads


def train_model(model: MedMM, batcher: Batcher, train_idx: np.ndarray, cfg: TrainConfig, desc: str,
                show_progress: bool, rank: int = 0, world: int = 1) -> MedMM:
    from tqdm import tqdm

    seed_everything(cfg.seed)
    model.requires_grad_(False)
    enc_params, head_params = trainable_parameters(model, cfg.finetune_blocks)
    for p in enc_params + head_params:
        p.requires_grad_(True)
    clip = ClipLoss().to(batcher.device) if cfg.contrastive_weight > 0 else None
    groups = [{"params": enc_params, "lr": cfg.encoder_lr}, {"params": head_params, "lr": cfg.lr}]
    if clip is not None:
        groups.append({"params": list(clip.parameters()), "lr": cfg.lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    ddp = None
    if world > 1:
        ddp = nn.parallel.DistributedDataParallel(_Trainable(model, cfg.finetune_blocks), find_unused_parameters=True)
    # torch's DistributedSampler (also with one replica): every rank gets an equal-length shard of the same
    # patient-grouped fold, reshuffled each epoch from the shared seed.
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(len(train_idx)), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    total = max(1, steps_per_epoch * cfg.epochs)
    warmup = min(50, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    # frozen BatchNorm statistics (ImageNet) in the encoder: cached features were computed in eval mode
    model.image_encoder.eval()
    for m in (model.image_proj, model.text_proj, model.fusion, model.head):
        m.train()
    g = torch.Generator().manual_seed(cfg.seed + 17 * rank)
    use_amp = batcher.device.startswith("cuda")
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        perm = train_idx[np.fromiter(iter(sampler), dtype=np.int64)]
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", disable=not show_progress,
                   leave=False)
        running = 0.0
        for step in bar:
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size].tolist()
            batch = batcher.get(idx, view="random", generator=g, modality_dropout=cfg.modality_dropout)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                if ddp is not None:
                    logits, img_feat = ddp(batch)
                else:
                    logits, img_feat = forward_batch(model, batch, cfg.finetune_blocks)
                loss = masked_bce(logits.float(), batch[-1])
                if clip is not None:
                    both = (batch[3] > 0) & (batch[4] > 0)
                    if both.sum() >= 2:
                        loss = loss + cfg.contrastive_weight * clip(model.image_proj(img_feat[both]),
                                                                    model.text_proj(batch[2][both]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
            bar.set_postfix(loss=f"{running:.4f}")
    model.eval()
    model.requires_grad_(False)
    return model


class _Trainable(nn.Module):
    """DDP wrapper around the trainable forward (module-holding so DDP can find its parameters)."""

    def __init__(self, model: MedMM, tail_blocks: int) -> None:
        super().__init__()
        self.model, self.tail_blocks = model, tail_blocks

    def forward(self, batch):
        return forward_batch(self.model, batch, self.tail_blocks)


@torch.inference_mode()
def predict_logits(model: MedMM, batcher: Batcher, idx: np.ndarray, cfg: TrainConfig,
                   drop: str | None = None) -> np.ndarray:
    out = []
    for s in range(0, len(idx), 256):
        batch = batcher.get(idx[s : s + 256].tolist(), view="clean", drop=drop)
        present = (batch[3] > 0) | (batch[4] > 0)  # rows left with no modality after the drop have no prediction
        logits = np.full((len(present), len(FINDINGS)), np.nan, np.float32)
        if present.any():
            logits[present.cpu().numpy()] = forward_batch(model, batch, cfg.finetune_blocks)[0][present].float().cpu().numpy()
        out.append(logits)
    return np.concatenate(out) if out else np.zeros((0, len(FINDINGS)), np.float32)


@torch.inference_mode()
def image_embeddings(model: MedMM, batcher: Batcher, idx: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    feats = []
    for s in range(0, len(idx), 256):
        stems = torch.stack([batcher.image_cache[i][0] for i in idx[s : s + 256]]).float().to(batcher.device)
        feats.append(model.image_encoder.forward_tail(stems, cfg.finetune_blocks).float().cpu().numpy())
    return np.concatenate(feats)


# ------------------------------------------------------------------------------------------------ evaluation
def calibrate_and_threshold(logits: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                            target_sensitivity: float | None) -> tuple[dict, dict, np.ndarray]:
    """Temperatures (all OOF), thresholds (on calibrated OOF), and cross-fitted calibrated probabilities.

    Cross-fitting: fold k's probabilities use a temperature fitted on the other folds, so the reported ECE is
    not measured on the data the temperature was fitted to.
    """
    temperatures, thresholds = {}, {}
    probs = np.full_like(logits, np.nan)
    for j, f in enumerate(FINDINGS):
        known = ~np.isnan(labels[:, j]) & ~np.isnan(logits[:, j])
        y, z = labels[known, j], logits[known, j]
        if len(np.unique(y)) < 2:
            temperatures[f], thresholds[f] = 1.0, 0.5
            continue
        temperatures[f] = fit_temperature(y, z)
        for k in np.unique(folds):
            m = known & (folds == k)
            other = known & (folds != k)
            t_k = fit_temperature(labels[other, j], logits[other, j]) if len(np.unique(labels[other, j])) > 1 else 1.0
            probs[m, j] = 1 / (1 + np.exp(-logits[m, j] / t_k))
        p_all = 1 / (1 + np.exp(-z / temperatures[f]))
        thresholds[f] = (sensitivity_threshold(y, p_all, target_sensitivity) if target_sensitivity
                         else youden_threshold(y, p_all))
    return temperatures, thresholds, probs


def evaluate_oof(records: list[Record], folds: np.ndarray, oof: dict[str, np.ndarray], temperatures: dict,
                 thresholds: dict, probs: np.ndarray) -> dict:
    """Per-finding metrics with patient-bootstrap CIs, per-fold mean ± std, calibration, modality comparison."""
    labels = label_matrix(records)
    groups = np.array([r.patient_id for r in records])
    sources = np.array([r.source for r in records])
    result: dict = {"findings": {}, "subsets": {}}

    def block(mask: np.ndarray, j: int, p: np.ndarray) -> dict | None:
        m = mask & ~np.isnan(labels[:, j]) & ~np.isnan(p)
        if m.sum() < 10 or len(np.unique(labels[m, j])) < 2:
            return None
        out = binary_metrics(labels[m, j], p[m], thresholds[FINDINGS[j]], groups=groups[m])
        per_fold = [roc_auc(labels[m & (folds == k), j], p[m & (folds == k)]) for k in np.unique(folds)]
        per_fold = [a for a in per_fold if np.isfinite(a)]
        out["auc_folds_mean"], out["auc_folds_std"] = float(np.mean(per_fold)), float(np.std(per_fold))
        out["ece"] = expected_calibration_error(labels[m, j], p[m])
        return out

    everyone = np.ones(len(records), bool)
    for j, f in enumerate(FINDINGS):
        result["findings"][f] = block(everyone, j, probs[:, j])
    pj = FINDINGS.index("Pneumonia")
    result["subsets"]["kermany_pneumonia_vs_normal_image_only"] = block(sources == "kermany", pj, probs[:, pj])
    # COVID collection with notes: image-only vs notes-only vs both (same rows, same calibration)
    cj = FINDINGS.index("COVID-19")
    both = (sources == "covid") & np.array([r.notes is not None and r.image is not None for r in records])
    for cond in ("full", "image_only", "notes_only"):
        z = oof[cond][:, cj]
        p = 1 / (1 + np.exp(-z / temperatures["COVID-19"]))
        res = block(both, cj, p)
        result["subsets"][f"covid_with_notes_covid19_{cond}"] = res
    return result


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medmm.train", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    ap.add_argument("--out", default="runs/default", help="output folder (checkpoint, metrics, caches)")
    ap.add_argument("--sources", default=",".join(d.sources), help="comma list of kermany,covid,iu ('' for none)")
    ap.add_argument("--manifest", default=None, help="CSV with image,notes,patient_id and one column per finding")
    ap.add_argument("--folds", type=int, default=d.folds, help="k for patient-grouped CV (0: no CV, final fit only)")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--encoder-lr", type=float, default=d.encoder_lr)
    ap.add_argument("--finetune-blocks", type=int, default=d.finetune_blocks)
    ap.add_argument("--aug-views", type=int, default=2, help="augmented cached views per image (plus one clean)")
    ap.add_argument("--modality-dropout", type=float, default=d.modality_dropout)
    ap.add_argument("--contrastive-weight", type=float, default=d.contrastive_weight)
    ap.add_argument("--target-sensitivity", type=float, default=None,
                    help="operating point: highest threshold reaching this sensitivity (default: Youden's J)")
    ap.add_argument("--limit-per-source", type=int, default=None, help="subsample each source (smoke runs)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--checkpoint-out", default=None, help="where to write the final checkpoint (default OUT/checkpoint)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cfg = replace(d, sources=tuple(s for s in args.sources.split(",") if s), manifest=args.manifest,
                  folds=args.folds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  encoder_lr=args.encoder_lr, finetune_blocks=args.finetune_blocks,
                  modality_dropout=args.modality_dropout, contrastive_weight=args.contrastive_weight,
                  target_sensitivity=args.target_sensitivity, seed=args.seed,
                  limit_per_source=args.limit_per_source)
    rank, world = dist_info()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    show = not args.no_progress and rank == 0
    out = Path(args.out)
    (out / "folds").mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    from medmm.energy import EnergyMeter

    total_meter = EnergyMeter(split=False)  # the folds' meters nest inside; do not share with them
    total_meter.__enter__()
    records = load_records(cfg.sources, cfg.manifest, cfg.limit_per_source, cfg.seed)
    if not records:
        raise SystemExit("no training records")
    model_cfg = ModelConfig(num_findings=len(FINDINGS))
    # channels_last: ~2x faster convolutions on CPU. Done here, not under inference_mode, so that the
    # parameters stay ordinary (trainable) tensors.
    model = create_model(model_cfg, pretrained=True).to(device)
    model.image_encoder.to(memory_format=torch.channels_last)
    prep = Preprocessing(input_size=cfg.input_size,
                         mean=tuple(model.image_encoder.pretrained_cfg.get("mean", (0.5,) * 3)),
                         std=tuple(model.image_encoder.pretrained_cfg.get("std", (0.5,) * 3)))
    t0 = time.time()
    if world > 1 and rank != 0:
        torch.distributed.barrier()  # rank 0 builds and saves the cache first; the others then read it
    image_cache = build_image_cache(model, records, cfg, prep, args.aug_views, out / "cache", device, show)
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    text_cache = build_text_cache(model, records)
    log.info("caches ready in %.0f s (%d images, %d notes)", time.time() - t0, len(image_cache),
             int(sum(r.notes is not None for r in records)))
    batcher = Batcher(records, image_cache, text_cache, device)
    initial = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("text_encoder.")}

    def fresh_model() -> MedMM:
        model.load_state_dict(initial, strict=False)
        return model

    labels = label_matrix(records)
    metrics: dict = {}
    temperatures = {f: 1.0 for f in FINDINGS}
    thresholds = {f: 0.5 for f in FINDINGS}
    energy_folds: list[dict] = []
    if cfg.folds >= 2:
        folds = patient_folds(records, cfg.folds, cfg.seed)
        run_key = cache_key(cfg, model_cfg, records, args.aug_views) + json.dumps(cfg.to_dict(), sort_keys=True)
        oof = {c: np.full((len(records), len(FINDINGS)), np.nan, np.float32) for c in ("full", "image_only", "notes_only")}
        for k in range(cfg.folds):
            path = out / "folds" / f"fold{k}.npz"
            val_idx, train_idx = np.where(folds == k)[0], np.where(folds != k)[0]
            if path.is_file():  # resume: only a fold of the same records, split and settings
                saved = np.load(path)
                if np.array_equal(saved["val_idx"], val_idx) and str(saved.get("run_key", "")) == run_key:
                    for c in oof:
                        oof[c][val_idx] = saved[c]
                    energy_folds.append(json.loads(str(saved["energy"])))
                    log.info("fold %d: resumed from %s", k, path)
                    continue
            with EnergyMeter() as meter:
                m = train_model(fresh_model(), batcher, train_idx, cfg, f"fold {k + 1}/{cfg.folds}", show, rank, world)
                full = predict_logits(m, batcher, val_idx, cfg)
                img_only = predict_logits(m, batcher, val_idx, cfg, drop="notes")
                txt_only = predict_logits(m, batcher, val_idx, cfg, drop="image")
            oof["full"][val_idx], oof["image_only"][val_idx], oof["notes_only"][val_idx] = full, img_only, txt_only
            energy_folds.append(meter.record.to_dict())
            if rank == 0:
                np.savez(path, val_idx=val_idx, full=full, image_only=img_only, notes_only=txt_only,
                         energy=json.dumps(meter.record.to_dict()), run_key=run_key)
            known = ~np.isnan(labels[val_idx, 1])
            log.info("fold %d: Pneumonia AUC %.4f (%d val records), energy %.0f J (%s)", k,
                     roc_auc(labels[val_idx, 1][known], full[known, 1]), len(val_idx),
                     meter.record.joules, meter.record.method)
        temperatures, thresholds, probs = calibrate_and_threshold(oof["full"], labels, folds, cfg.target_sensitivity)
        metrics = evaluate_oof(records, folds, oof, temperatures, thresholds, probs)
        metrics["folds"] = cfg.folds
        if rank == 0:
            np.savez(out / "oof.npz", folds=folds, labels=labels, probs=probs, **oof,
                     sources=np.array([r.source for r in records]))

    # final model on everything
    final = train_model(fresh_model(), batcher, np.arange(len(records)), cfg, "final", show, rank, world)
    img_idx = np.array([i for i, r in enumerate(records) if r.image])
    ood = OODReference.fit(image_embeddings(final, batcher, img_idx, cfg)) if len(img_idx) > 10 else None
    total_meter.__exit__(None, None, None)
    _write_rank_summary(out, rank, final, metrics)
    if rank != 0:
        return 0
    summary = {
        "records": {s: int(sum(r.source == s for r in records)) for s in sorted({r.source for r in records})},
        "patients": len({r.patient_id for r in records}),
        "config": cfg.to_dict() | {"aug_views": args.aug_views},
        "command": "python -m medmm.train " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "energy": {"total": total_meter.record.to_dict(), "folds": energy_folds},
        "duration_s": round(time.time() - t0, 1),
    }
    meta = CheckpointMeta(model=model_cfg, preprocessing=prep, findings=FINDINGS, temperatures=temperatures,
                          thresholds=thresholds, trained=True, name=out.name,
                          operating_point=(f"sensitivity >= {cfg.target_sensitivity} on out-of-fold predictions"
                                           if cfg.target_sensitivity else "Youden's J on out-of-fold predictions"),
                          training=summary, metrics=_headline(metrics))
    ckpt = save_checkpoint(args.checkpoint_out or out / "checkpoint", final, meta, ood)
    (out / "metrics.json").write_text(json.dumps({"metrics": metrics, "training": summary}, indent=2, default=float))
    log.info("checkpoint written to %s; metrics in %s", ckpt, out / "metrics.json")
    return 0


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
            out[name] = {k: res[k] for k in ("auc", "sensitivity", "specificity", "f1", "n")}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
