"""The multimodal fusion model and ``create_model``.

Fusion choice — gated fusion, not cross-attention: each modality arrives as one pooled vector (an image
embedding averaged over the request's views, a mean-pooled notes embedding), so there is no token grid for
cross-attention to attend over, and the training data (a few thousand image/notes pairs, most sources with a
single modality) is far too small to learn attention maps between them. A learned per-dimension gate decides
how much each present modality contributes; a missing modality is replaced by a learned "absent" vector and
its gate is forced to zero, so either modality can be missing in training (modality dropout) and inference.
"""

from __future__ import annotations

import torch
from torch import nn

from medmm.config import ModelConfig
from medmm.models.encoders import ImageEncoder, TextEncoder


def view_features(encode_batch, pixels: torch.Tensor) -> torch.Tensor:
    """``[B, V, 3, H, W]`` -> per-view features ``[B, V, F]``; ``encode_batch`` maps ``[N, 3, H, W]`` -> ``[N, F]``
    (the torch encoder, an ONNX session, the batching worker)."""
    b, v = pixels.shape[:2]
    return encode_batch(pixels.flatten(0, 1)).view(b, v, -1)


def pool_views(per_view: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, V, F]`` -> ``[B, F]``: the mean over a request's views (with ``view_mask``, over the real ones only).
    The one view-pooling rule of the model, the pipeline's runtimes and the explanations."""
    if view_mask is None:
        return per_view.mean(1)
    w = view_mask.to(per_view.dtype)[..., None]
    return (per_view * w).sum(1) / w.sum(1).clamp_min(1.0)


class GatedFusion(nn.Module):
    """``z = g * img + (1 - g) * txt`` with ``g = sigmoid(W [img; txt; presence])``; absent modalities gated out."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * dim + 2, dim)
        self.absent_image = nn.Parameter(torch.zeros(dim))
        self.absent_text = nn.Parameter(torch.zeros(dim))

    def forward(self, img: torch.Tensor, txt: torch.Tensor, has_img: torch.Tensor, has_txt: torch.Tensor) -> torch.Tensor:
        # img, txt: [B, D]; has_*: [B] float {0, 1}
        hi, ht = has_img[:, None], has_txt[:, None]
        img = hi * img + (1 - hi) * self.absent_image
        txt = ht * txt + (1 - ht) * self.absent_text
        g = torch.sigmoid(self.gate(torch.cat([img, txt, hi, ht], dim=-1)))
        # exactly one modality present -> use it alone; neither -> absent vectors (callers refuse that case)
        g = torch.where((hi > 0) & (ht == 0), torch.ones_like(g), g)
        g = torch.where((hi == 0) & (ht > 0), torch.zeros_like(g), g)
        return g * img + (1 - g) * txt


class BagOfWords(nn.Module):
    """Trained bag-of-words pathway over the text encoder's frozen token embeddings (a deep averaging network).

    A frozen sentence encoder's mean-pooled embedding blurs the few words that decide the label (a pathogen
    named in the notes, a negation); a per-token MLP, masked-mean pooled, learns a weight per word as TF-IDF +
    logistic regression does, and it works on the same token embeddings, so token attributions cover it.
    """

    def __init__(self, emb_dim: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(emb_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # [B, T, E] -> [B, D]
        m = attention_mask.unsqueeze(-1).to(embeds.dtype)
        return (self.mlp(embeds) * m).sum(1) / m.sum(1).clamp_min(1.0)


class StateHead(nn.Module):
    """Softmax over mutually exclusive states -> finding log-odds ``log P(f) - log(1 - P(f))``.

    ``P(f)`` sums the states in which finding ``f`` is present (``labels.LEAF_MATRIX``), so a subtype is never
    more probable than its parent and "No Finding" + "Pneumonia" never exceed 1. ``temperature`` (fitted after
    training, stored with the weights) scales the state logits before marginalising: calibration keeps coherence.
    """

    def __init__(self) -> None:
        super().__init__()
        from medmm.labels import LEAF_MATRIX

        present = torch.from_numpy(LEAF_MATRIX.astype(bool))  # [L, F]
        self.register_buffer("present", present, persistent=False)
        self.register_buffer("temperature", torch.ones(()))

    def finding_logits(self, state_logits: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, F]
        z = (state_logits / self.temperature)[..., :, None]                  # [B, L, 1]
        neg = torch.finfo(z.dtype).min
        inside = torch.logsumexp(z.masked_fill(~self.present, neg), dim=-2)  # log sum_{l has f} exp z_l
        outside = torch.logsumexp(z.masked_fill(self.present, neg), dim=-2)
        return inside - outside


class MedMM(nn.Module):
    """Image encoder (timm) + text encoder (transformers, frozen) -> projections -> gated fusion -> findings logits."""

    def __init__(self, cfg: ModelConfig, image_encoder: ImageEncoder, text_encoder: TextEncoder | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        text_dim = text_encoder.dim if text_encoder is not None else 384
        d = cfg.fused_dim
        self.bag_of_words = BagOfWords(text_dim, cfg.bag_of_words_dim) if cfg.bag_of_words_dim else None
        self.image_proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(image_encoder.num_features, d), nn.GELU())
        self.notes_expert = None  # medmm.models.notes_expert.NotesExpert (plain numbers, set by training / the checkpoint)
        # the notes features keep one layout, [sentence embedding; bag of words; expert column] (the report ranks its
        # sentences by the first part); a model without cfg.sentence_embedding projects only the rest
        self.text_skip = 0 if cfg.sentence_embedding else text_dim
        n_text = text_dim + cfg.bag_of_words_dim + (1 if cfg.notes_expert else 0) - self.text_skip
        if n_text <= 0:
            raise ValueError("the model reads no notes features (no sentence embedding, bag of words or expert)")
        self.text_proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(n_text, d), nn.GELU())
        self.fusion = GatedFusion(d)
        if cfg.output == "states":
            from medmm.labels import LEAF_NAMES

            self.state_head = StateHead()
            n_out = len(LEAF_NAMES)
        elif cfg.output == "independent":
            self.state_head = None
            n_out = cfg.num_findings
        else:
            raise ValueError(f"unknown output {cfg.output!r}; expected 'states' or 'independent'")
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Dropout(cfg.dropout), nn.Linear(d, n_out))
        if cfg.notes_expert and self.state_head is not None:
            # residual notes expert: its log-odds go straight onto the states where its finding is present
            # (scaled by a learned weight, initialised at 1), the fused model learns the correction
            from medmm.labels import FINDING_INDEX, LEAF_MATRIX

            col = torch.from_numpy(LEAF_MATRIX[:, FINDING_INDEX[cfg.notes_expert]].astype("float32"))
            self.register_buffer("expert_states", col, persistent=False)
            self.expert_weight = nn.Parameter(torch.ones(()))

    # --- encoders
    def encode_images(self, pixels: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, V, 3, H, W]`` (V views per request) -> masked mean of per-view features ``[B, F]``."""
        return pool_views(view_features(self.encode_image_batch, pixels), view_mask)

    def encode_image_batch(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> ``[N, F]`` (NHWC inside: ~2x faster convolutions on a CPU)."""
        return self.image_encoder(x.contiguous(memory_format=torch.channels_last))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    expert_logit: torch.Tensor | None = None) -> torch.Tensor:
        if self.text_encoder is None:
            raise RuntimeError("model was built without a text encoder")
        return self.text_features_from_embeds(self.text_encoder.embeddings_layer()(input_ids), attention_mask,
                                              expert_logit)

    def text_features_from_embeds(self, embeds: torch.Tensor, attention_mask: torch.Tensor,
                                  expert_logit: torch.Tensor | None = None) -> torch.Tensor:
        """Notes features from token embeddings ``[B, T, E]``: the one text path (pipeline, training, attribution).

        ``expert_logit`` ``[B]``: the notes expert's logit for each row (``notes_expert_features``), a constant here.
        """
        return self.join_text_features(self.text_encoder.forward_embeds(embeds, attention_mask),
                                       None if self.bag_of_words is None else self.bag_of_words(embeds, attention_mask),
                                       expert_logit)

    def join_text_features(self, pooled: torch.Tensor, bag: torch.Tensor | None,
                           expert_logit: torch.Tensor | None) -> torch.Tensor:
        """``[sentence embedding; bag of words; expert column]``: the notes features of every path (what the fusion
        projects is ``project_text``'s part of them)."""
        parts = [pooled] + ([bag] if bag is not None else [])
        if self.cfg.notes_expert:
            e = torch.zeros(pooled.shape[0], device=pooled.device) if expert_logit is None else expert_logit
            parts.append((e.to(pooled.dtype).reshape(-1, 1) / 4).expand(pooled.shape[0], 1))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else pooled

    def project_text(self, text_feat: torch.Tensor) -> torch.Tensor:
        """Notes features -> the fused width; a model without ``cfg.sentence_embedding`` skips that part."""
        return self.text_proj(text_feat[:, self.text_skip:])

    def notes_expert_features(self, notes: list[str | None]) -> torch.Tensor | None:
        """``[B]`` word evidence of the notes expert (``NotesExpert.features``; None when the model has none)."""
        if self.notes_expert is None:
            return None
        return torch.from_numpy(self.notes_expert.features(notes))

    # --- fusion + head on pooled features (what training on cached features calls directly)
    def forward_features(self, image_feat: torch.Tensor | None, text_feat: torch.Tensor | None,
                         has_image: torch.Tensor | None = None, has_text: torch.Tensor | None = None) -> torch.Tensor:
        ref = image_feat if image_feat is not None else text_feat
        if ref is None:
            raise ValueError("at least one modality is required")
        b, dev = ref.shape[0], ref.device
        d = self.cfg.fused_dim
        if image_feat is None:
            img, has_image = torch.zeros(b, d, device=dev), torch.zeros(b, device=dev)
        else:
            img = self.image_proj(image_feat)
            has_image = torch.ones(b, device=dev) if has_image is None else has_image.float()
        if text_feat is None:
            txt, has_text = torch.zeros(b, d, device=dev), torch.zeros(b, device=dev)
        else:
            txt = self.project_text(text_feat)
            has_text = torch.ones(b, device=dev) if has_text is None else has_text.float()
        out = self._with_expert(self.head(self.fusion(img, txt, has_image, has_text)), text_feat, has_text)
        # [B, num_findings] finding logits (log-odds of the calibrated-state marginals for a state head)
        return out if self.state_head is None else self.state_head.finding_logits(out)

    def image_state_probs(self, image_feat: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` probabilities of the mutually exclusive states from the image alone (notes absent), at the
        state head's temperature: what ``forward_features(image_feat, None)`` sums into findings."""
        if self.state_head is None:
            raise ValueError("this model predicts independent findings, not states")
        b, d = image_feat.shape[0], self.cfg.fused_dim
        zeros = torch.zeros(b, device=image_feat.device)
        out = self.head(self.fusion(self.image_proj(image_feat), torch.zeros(b, d, device=image_feat.device),
                                    torch.ones_like(zeros), zeros))
        return torch.softmax(out / self.state_head.temperature, dim=-1)

    def forward_states(self, image_feat: torch.Tensor, text_feat: torch.Tensor, has_image: torch.Tensor,
                       has_text: torch.Tensor) -> torch.Tensor:
        """Raw state logits ``[B, L]`` (training of a state head); all inputs given, absences by the masks."""
        img, txt = self.image_proj(image_feat), self.project_text(text_feat)
        return self._with_expert(self.head(self.fusion(img, txt, has_image.float(), has_text.float())), text_feat,
                                 has_text)

    def _with_expert(self, state_logits: torch.Tensor, text_feat: torch.Tensor | None,
                     has_text: torch.Tensor) -> torch.Tensor:
        if text_feat is None or not hasattr(self, "expert_weight"):
            return state_logits
        expert = text_feat[:, -1] * 4 * has_text.to(text_feat.dtype)  # the expert column of join_text_features
        return state_logits + self.expert_weight * expert[:, None] * self.expert_states

    def forward(self, pixels: torch.Tensor | None = None, view_mask: torch.Tensor | None = None,
                input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        image_feat = self.encode_images(pixels, view_mask) if pixels is not None else None
        text_feat = self.encode_text(input_ids, attention_mask) if input_ids is not None else None
        return self.forward_features(image_feat, text_feat)


def create_model(cfg: ModelConfig, *, pretrained: bool = True, with_text: bool = True) -> MedMM:
    """Build the model; ``pretrained`` loads the encoders' offline weights (False: random image encoder, for tests)."""
    image = ImageEncoder(cfg.image_encoder, cfg.image_weights if pretrained else None, cfg.image_pool)
    text = TextEncoder(cfg.text_encoder, cfg.text_max_tokens) if with_text else None
    return MedMM(cfg, image, text)
