"""One training run's shared state (``Run``): the records, the caches, the model and its initial weights; every fit
of the run (a fold, a left-out source, the final model) starts from them. A finished fit is saved under
``OUT/folds``, so an interrupted run resumes."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import torch

from medmm.config import ModelConfig, Preprocessing, TrainConfig
from medmm.labels import FINDINGS
from medmm.models.checkpoint import OODReference, ScopeCheck
from medmm.models.model import MedMM, create_model
from medmm.training.batches import Batcher
from medmm.training.cache import build_image_cache, build_text_cache, cache_key
from medmm.training.calibration import expert_slope, fit_scope
from medmm.training.cli import RunConfig
from medmm.training.data import label_matrix, load_records
from medmm.training.loop import image_embeddings, predict_states, train_model

log = logging.getLogger("medmm.train")


class Run:
    """What every training step of one run shares: records, caches, the model and its initial weights."""

    def __init__(self, config: RunConfig, rank: int, world: int, device: str) -> None:
        cfg = config.train
        self.config, self.cfg, self.rank, self.world, self.device = config, cfg, rank, world, device
        self.show = config.progress and rank == 0
        self.out = config.out
        (self.out / "folds").mkdir(parents=True, exist_ok=True)
        self.records = load_records(cfg.sources, cfg.manifest, cfg.limit_per_source, cfg.seed)
        if not self.records:
            raise SystemExit("no training records")
        self.model_cfg = ModelConfig(image_encoder=config.image_encoder, num_findings=len(FINDINGS), output="states",
                                     bag_of_words_dim=cfg.bag_of_words_dim,
                                     sentence_embedding=cfg.sentence_embedding, notes_expert=cfg.notes_expert,
                                     image_weights=ModelConfig.image_weights if config.pretrained else None)
        # channels_last: ~2x faster convolutions on CPU; set here, not under inference_mode, so the
        # parameters stay ordinary (trainable) tensors
        self.model = create_model(self.model_cfg, pretrained=config.pretrained).to(device)
        self.model.image_encoder.to(memory_format=torch.channels_last)
        pcfg = self.model.image_encoder.pretrained_cfg
        self.prep = Preprocessing(input_size=cfg.input_size, mean=tuple(pcfg.get("mean", (0.5,) * 3)),
                                  std=tuple(pcfg.get("std", (0.5,) * 3)))
        if world > 1 and rank != 0:
            torch.distributed.barrier()  # rank 0 builds and saves the cache first; the others then read it
        image_cache = build_image_cache(self.model, self.records, cfg, self.prep, config.aug_views,
                                        self.out / "cache", device, self.show)
        if world > 1 and rank == 0:
            torch.distributed.barrier()
        self.batcher = Batcher(self.records, image_cache, build_text_cache(self.model, self.records), device,
                               cfg.source_weights)
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items() if not k.startswith("text_encoder.")}
        self.labels = label_matrix(self.records)
        self.sources = np.array([r.source for r in self.records])
        self.groups = np.array([r.patient_id for r in self.records])
        # what a saved fold's predictions depend on: the cached images, the training settings and the architecture
        self.run_key = (cache_key(cfg, self.model_cfg, self.records, config.aug_views)
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

    def train(self, train_idx: np.ndarray, desc: str, cfg: TrainConfig | None = None) -> MedMM:
        """The model of one split, trained from the run's initial weights (with the run's settings unless ``cfg``)."""
        return train_model(self.fresh_model(), self.batcher, train_idx, cfg or self.cfg, desc, self.show, self.rank,
                           self.world)

    def predict(self, m: MedMM, test_idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"full": predict_states(m, self.batcher, test_idx, self.cfg),
                "image_only": predict_states(m, self.batcher, test_idx, self.cfg, drop="notes"),
                "notes_only": predict_states(m, self.batcher, test_idx, self.cfg, drop="image")}

    def fit_and_predict(self, name: str, train_idx: np.ndarray, test_idx: np.ndarray, desc: str,
                        loso_epochs: int | None = None) -> tuple[dict, dict]:
        """Train on ``train_idx``, predict ``test_idx`` (full / image only / notes only); resumable from OUT/folds.
        ``loso_epochs``: epochs of this fit instead of the recipe's (the leave-one-source-out fits)."""
        from medmm.energy import EnergyMeter

        cfg, run_key = self.cfg, self.run_key
        if loso_epochs:
            cfg, run_key = replace(cfg, epochs=loso_epochs), f"{run_key}|loso_epochs={loso_epochs}"
        path = self.out / "folds" / f"{name}.npz"
        if path.is_file():  # resume: only the same records, split and settings
            saved = np.load(path)
            if np.array_equal(saved["val_idx"], test_idx) and str(saved.get("run_key", "")) == run_key:
                log.info("%s: resumed from %s", name, path)
                return {c: saved[c] for c in ("full", "image_only", "notes_only")}, json.loads(str(saved["energy"]))
        self.set_notes_expert(train_idx, test_idx)
        with EnergyMeter() as meter:
            m = self.train(train_idx, desc, cfg)
            preds = self.predict(m, test_idx)
        energy = meter.record.to_dict()
        if self.rank == 0:
            np.savez(path, val_idx=test_idx, energy=json.dumps(energy), run_key=run_key, **preds)
        return preds, energy


def fit_final(run: Run) -> tuple[MedMM, OODReference | None, ScopeCheck | None]:
    """The shipped model: trained on every record, with its out-of-distribution reference and scope check (with the
    rate it fires per source)."""
    expert = run.set_notes_expert(np.arange(len(run.records)), np.array([], dtype=np.int64))
    final = run.train(np.arange(len(run.records)), "final")
    final.notes_expert = expert
    img_idx = np.array([i for i, r in enumerate(run.records) if r.image])
    if len(img_idx) <= 10:
        return final, None, None
    emb = image_embeddings(final, run.batcher, img_idx, run.cfg)
    groups = np.array([run.records[i].patient_id for i in img_idx])
    scope, rates = fit_scope(emb, run.sources[img_idx], groups)
    scope.rates = rates
    return final, OODReference.fit(emb), scope

