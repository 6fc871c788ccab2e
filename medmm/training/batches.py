"""Training and evaluation batches assembled from the caches (no image decoding in the training loop), and the
forward pass of the trainable part on them: the image encoder's tail, the notes pathway, the fusion and the state
head."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medmm.labels import allowed_states
from medmm.models.model import MedMM
from medmm.training.cache import TextCache
from medmm.training.data import Record, label_matrix


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
