"""``Pipeline.from_checkpoint(path).predict(scans, notes) -> Prediction``: the one inference path.

The app, the CLI, the benchmark and the evaluation all call this; nothing else preprocesses or thresholds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import torch

from medmm import caveats
from medmm.models.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from medmm.io import RADIOGRAPH_MODALITIES, Scan, load_scans
from medmm.calls import decide, load_scope
from medmm.gate import load_gate
from medmm.labels import ancestors
from medmm.lru import cached
from medmm.prediction import Prediction
from medmm.text import strip_controls
from medmm.models.transforms import to_model_input

log = logging.getLogger(__name__)

ScanInput = Union[str, Path, bytes, Scan]
MAX_NOTES_CHARS = 20_000       # more than any clinical indication; longer input is cut (with a warning)
MAX_SCANS = 8                  # views per request
CACHE_ENTRIES = 256            # notes kept in each of the pipeline's caches (tokens, features), least recent dropped


class InputError(ValueError):
    """A request the pipeline cannot answer (no inputs, too many scans, ...); message is user-facing."""


def clean_notes(notes: str | None) -> tuple[str | None, list[str]]:
    """Strip control characters and excess whitespace; cap the length. Returns (notes or None, warnings)."""
    if notes is None:
        return None, []
    warnings: list[str] = []
    if len(notes) > MAX_NOTES_CHARS:
        notes = notes[:MAX_NOTES_CHARS]
        warnings.append(caveats.notes_cut(MAX_NOTES_CHARS))
    notes = " ".join(strip_controls(notes).split())   # medmm.text: controls -> spaces, format characters dropped
    return (notes or None), warnings


@dataclass
class ModelInputs:
    """Tensors for one request plus what was loaded (explanations reuse these)."""

    scans: list[Scan]
    pixels: torch.Tensor | None          # [1, V, C, S, S]
    input_ids: torch.Tensor | None       # [1, T], filled by Pipeline.tokens when the notes' embedding is needed
    attention_mask: torch.Tensor | None  # [1, T]
    notes: str | None
    warnings: list[str]
    # the input gate (medmm.gate): why the request is refused (None = analysed), and what it saw in each scan
    refusal: str | None = None
    gate: list[dict] = field(default_factory=list)
    # per-view image features once computed for this request ([1, V, F], from whichever encoder the pipeline runs):
    # the explanation and its saliency check reuse the prediction's instead of encoding the film again
    view_cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)


class Pipeline:
    """Loaded once per process; ``predict`` is safe to call from several threads (no per-request state on self).

    A server builds the pipeline it serves with its ``batcher`` (``medmm.service.ImageBatcher``: groups concurrent
    image-encoder forwards) and ``idle_watts`` (idle power per machine-wide energy counter, measured once at start-up;
    each request's meter subtracts its share): ``medmm.service.serving_pipeline`` -> :meth:`for_serving`."""

    def __init__(self, model, meta, ood, device: str = "cpu", runtime=None, scope=None, gate=None, *,
                 batcher: Callable | None = None, idle_watts: Mapping[str, float] | None = None) -> None:
        self.model, self.meta, self.ood, self.device = model, meta, ood, device
        # medmm.gate.InputGate: refuses scans that are not chest radiographs, sets lateral views aside (None: off)
        self.gate = gate
        # the checkpoint's scope table (medmm.calls.load_scope): which findings may be called for which population
        self.scope = dict(scope or {})
        self.model.image_encoder.to(memory_format=torch.channels_last)  # matches encode_images' NHWC input
        self.findings: tuple[str, ...] = meta.findings
        self.temperatures = torch.tensor([meta.temperatures[f] for f in self.findings], dtype=torch.float32)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # sha256(notes) -> embedding
        self._text_lock = threading.Lock()
        # medmm.runtime.EncoderRuntime: encoder forwards through ONNX Runtime / OpenVINO; None = torch
        self.runtime = runtime
        self.batcher = batcher  # medmm.service.ImageBatcher or None (each forward on its own)
        self.idle_watts: dict[str, float] = dict(idle_watts or {})  # empty: nothing subtracted
        self._tok_cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # sha256 -> ids, mask

    @classmethod
    def from_checkpoint(cls, path: str | Path = DEFAULT_CHECKPOINT, device: str | None = None,
                        runtime: str | None = None) -> "Pipeline":
        """``runtime``: ``auto`` | ``torch`` | ``onnxruntime`` | ``openvino`` (default ``$MEDMM_RUNTIME`` or auto;
        see medmm.runtime). Explanations always use the torch model."""
        from medmm import runtime as rt

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, meta, ood = load_checkpoint(path, device=device)
        model.image_encoder.fold_batchnorm_()  # inference only: same outputs (<1e-5), ~1.2x faster backbone
        if not meta.trained:
            log.warning("checkpoint %s is UNTRAINED: predictions are meaningless", path)
        encoders = rt.build(runtime, model, meta, device)
        return cls(model, meta, ood, device, runtime=None if encoders.name == "torch" else encoders,
                   scope=load_scope(path), gate=load_gate(path))

    def for_serving(self, *, batcher: Callable | None = None,
                    idle_watts: Mapping[str, float] | None = None) -> "Pipeline":
        """A pipeline over the same loaded model, runtime, scope table and gate, built with a server's ``batcher``
        and ``idle_watts`` (this one is left as it is; the new one starts with empty caches)."""
        return type(self)(self.model, self.meta, self.ood, self.device, runtime=self.runtime, scope=self.scope,
                          gate=self.gate, batcher=batcher, idle_watts=idle_watts)

    @property
    def runtime_name(self) -> str:
        return "torch" if self.runtime is None else self.runtime.name

    # ------------------------------------------------------------------------------------------------ inputs
    def prepare(self, scans: Sequence[ScanInput] = (), notes: str | None = None, *,
                gate_inputs: bool = True) -> ModelInputs:
        """Load/validate scans and notes into model tensors. Raises ScanError / InputError with clear messages.

        With ``gate_inputs`` (and a checkpoint that has a gate), each scan passes the input gate: a request with a
        scan that is not a chest radiograph is marked refused (``ModelInputs.refusal``); lateral views are set aside
        (not analysed, said in a warning) and a request of lateral views only is refused."""
        notes, warnings = clean_notes(notes)
        if not scans and not notes:
            raise InputError("Provide at least one scan or some clinical notes.")
        if len(scans) > MAX_SCANS:
            raise InputError(f"At most {MAX_SCANS} scans per request (got {len(scans)}).")
        raw = [s for s in scans if not isinstance(s, Scan)]
        # a CT series collapses several files into one Scan
        loaded = [s for s in scans if isinstance(s, Scan)] + (load_scans(raw) if raw else [])
        pixels = None
        if loaded:
            prep = self.meta.preprocessing
            pixels = torch.stack([to_model_input(s.pixels, prep) for s in loaded])[None].to(self.device)
            for s in loaded:
                if s.metadata.modality is not None and s.metadata.modality not in RADIOGRAPH_MODALITIES:
                    warnings.append(caveats.not_a_radiograph(s.metadata.modality))
        refusal, checks = None, []
        if pixels is not None and gate_inputs and self.gate is not None:
            refusal, checks, keep = self._gate(loaded, pixels, warnings)
            if refusal is None and len(keep) < len(loaded):
                loaded, pixels = [loaded[i] for i in keep], pixels[:, keep]
        # the notes are tokenized only if a draft's sentence ranking needs their embedding (``tokens``)
        return ModelInputs(loaded, pixels, None, None, notes, warnings, refusal, checks)

    def _gate(self, loaded: list[Scan], pixels: torch.Tensor, warnings: list[str]) -> tuple[str | None, list[dict], list[int]]:
        """(refusal or None, per-scan gate results, indices of the scans to analyse); warnings for set-aside views."""
        checks = self.gate.check(self.model.image_encoder, pixels[0])
        n = len(loaded)
        results = [{"scan": i + 1, "p_chest_radiograph": round(c.p_chest, 4), "chest_radiograph": c.chest,
                    "p_lateral": round(c.p_lateral, 4) if c.chest else None, "lateral": c.lateral and c.chest,
                    "set_aside": False} for i, c in enumerate(checks)]
        refused = [i for i, c in enumerate(checks) if not c.chest]
        if refused:
            return caveats.not_chest_refusal([(caveats.scan_name(i, n), checks[i].p_chest) for i in refused]), \
                results, []
        header_lateral = [s.metadata.view is not None and s.metadata.view not in ("AP", "PA") for s in loaded]
        lateral = [i for i, c in enumerate(checks) if c.lateral or header_lateral[i]]
        how = {i: caveats.lateral_how(checks[i].lateral, checks[i].p_lateral, loaded[i].metadata.view)
               for i in lateral}
        for i in lateral:
            results[i]["set_aside"] = True
        if len(lateral) == n:
            return caveats.lateral_refusal([(caveats.scan_name(i, n), how[i]) for i in lateral]), results, []
        for i in lateral:
            warnings.append(caveats.lateral_set_aside(caveats.scan_name(i, n), how[i]))
        return None, results, [i for i in range(n) if i not in lateral]

    def _tokenize(self, notes: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenised notes, LRU-cached by sha256 (a re-sent note skips the tokenizer; cached tensors are shared
        read-only, never modified in place)."""
        def tokenize() -> tuple[torch.Tensor, torch.Tensor]:
            tok = self.model.text_encoder.tokenize([notes])
            return tok["input_ids"], tok["attention_mask"]

        key = hashlib.sha256(notes.encode("utf-8", "surrogatepass")).hexdigest()
        return cached(self._tok_cache, self._text_lock, key, tokenize, CACHE_ENTRIES)

    # ------------------------------------------------------------------------------------------------ model
    def tokens(self, inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The notes' token ids and mask ``[1, T]`` (the text encoder reads at most its ``max_tokens``), made on first
        use and kept on ``inputs``; None without notes. Only the notes' sentence embedding needs them."""
        if not inputs.notes:
            return None
        if inputs.input_ids is None:
            ids, mask = self._tokenize(inputs.notes)
            inputs.input_ids, inputs.attention_mask = ids.to(self.device), mask.to(self.device)
        return inputs.input_ids, inputs.attention_mask

    def text_features(self, inputs: ModelInputs) -> torch.Tensor | None:
        if self.tokens(inputs) is None:
            return None

        def encode() -> torch.Tensor:
            expert = self.model.notes_expert_features([inputs.notes])
            if self.runtime is not None and self.runtime.text is not None:  # exported encoder (+ bag of words)
                return self.model.join_text_features(
                    *self.runtime.encode_text(inputs.input_ids, inputs.attention_mask), expert)
            return self.model.encode_text(inputs.input_ids, inputs.attention_mask, expert)

        key = hashlib.sha256(inputs.notes.encode()).hexdigest()  # notes text itself is never kept
        return cached(self._text_cache, self._text_lock, key, encode, CACHE_ENTRIES)

    def notes_embedding(self, inputs: ModelInputs) -> np.ndarray | None:
        """The notes' sentence embedding ``[dim]`` (L2-normalised; what the report's sentence bank is indexed by),
        LRU-cached by the notes' hash; None without notes. Only the draft's sentence ranking reads it."""
        txt = self.text_features(inputs)
        return None if txt is None else txt[0, :self.model.text_encoder.dim].float().cpu().numpy()

    def forward_only_encoder(self):
        """The forward-only image encoder ``[N, 3, S, S] -> [N, F]``: the batcher (medmm.service) when batching is
        on, else the runtime's (ONNX Runtime / OpenVINO); None for plain torch (the model encodes itself)."""
        if self.batcher is not None:
            return self.batcher
        if self.runtime is not None and self.runtime.image is not None:
            return self.runtime.encode_image_batch
        return None

    def image_encoder_forward(self) -> Callable:
        """What a batcher wraps: the runtime's image encoder (ONNX Runtime / OpenVINO), else the torch model's."""
        if self.runtime is not None and self.runtime.image is not None:
            return self.runtime.encode_image_batch
        return self.model.encode_image_batch

    def view_features(self, inputs: ModelInputs) -> torch.Tensor | None:
        """Per-view image features ``[1, V, F]`` through the batcher, the runtime or the torch model; computed once
        per request (``inputs.view_cache``). May be an inference tensor: clone before using it under autograd."""
        if inputs.pixels is None:
            return None
        cached = inputs.view_cache.get("views")
        if cached is not None:
            return cached
        from medmm.models.model import view_features

        encode = self.forward_only_encoder()
        encode = self.model.encode_image_batch if encode is None else encode
        inputs.view_cache["views"] = out = view_features(encode, inputs.pixels)
        return out

    def image_features(self, inputs: ModelInputs) -> torch.Tensor | None:
        """Pooled image features ``[1, F]``: the mean over the request's views."""
        from medmm.models.model import pool_views

        views = self.view_features(inputs)
        return None if views is None else pool_views(views)

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-finding temperature scaling -> probabilities."""
        return torch.sigmoid(logits / self.temperatures.to(logits.device))

    @torch.inference_mode()
    def predict(self, scans: Sequence[ScanInput] = (), notes: str | None = None) -> Prediction:
        inputs = self.prepare(scans, notes)
        return self.predict_prepared(inputs)

    def refused(self, inputs: ModelInputs) -> Prediction:
        """The answer to a refused request: no probabilities, no calls; the reason as the one warning."""
        modalities = tuple(m for m, present in (("image", inputs.pixels is not None), ("notes", bool(inputs.notes)))
                           if present)
        return Prediction(findings={}, thresholds={}, positive=(), modalities=modalities,
                          warnings=(inputs.refusal,), scan_metadata=tuple(s.metadata.to_dict() for s in inputs.scans),
                          checkpoint={"name": self.meta.name, "version": self.meta.medmm_version,
                                      "trained": self.meta.trained, "sha256": self.meta.weights_sha256},
                          status="refused", refusal=inputs.refusal)

    @torch.inference_mode()
    def predict_prepared(self, inputs: ModelInputs) -> Prediction:
        """The image model's answer, updated by the notes' evidence (``medmm.notes``: concepts with assertion,
        published likelihood ratios, Bayes' rule on the image's states). The learned notes pathway of the checkpoint
        is not used for predictions (the model card says why); the notes' sentence embedding, which only the draft
        report's sentence ranking reads, is computed by ``notes_embedding`` when a report is drafted. A refused
        request (``inputs.refusal``, the input gate) gets no probabilities at all (``refused``)."""
        if inputs.refusal is not None:
            return self.refused(inputs)
        img = self.image_features(inputs)
        img_np = None if img is None else img[0].float().cpu().numpy()
        evidence = pretest = None
        if inputs.notes:
            from medmm.notes import combine, read_note

            hint = None if img_np is None else ("adult" if self.looks_adult(img_np) else "child")
            evidence = combine(read_note(inputs.notes), hint, inputs.notes)
        alone = prior = None
        if img is not None:
            alone = self.calibrate(self.model.forward_features(img, None))[0].float().cpu().numpy()
            probs = alone
            if evidence is not None and getattr(self.model, "state_head", None) is not None:
                prior = self.model.image_state_probs(img)[0].double().cpu().numpy()
            if evidence is not None and not evidence.empty:
                probs = self._apply_evidence(prior, alone, evidence)
        else:
            from medmm.notes import marginals, pretest_states, update_states

            prior, pretest = pretest_states(evidence.population)
            probs = marginals(update_states(prior, evidence.log_lr))
        pred = replace(self._to_prediction(probs, inputs, img, evidence), notes_evidence=evidence,
                       image_findings=None if alone is None else dict(zip(self.findings, map(float, alone))),
                       pretest=pretest, prior_states=prior)
        return replace(pred, warnings=pred.warnings + tuple(caveats.notes_evidence(pred, self.scope)))

    def _apply_evidence(self, prior: np.ndarray | None, alone: np.ndarray, evidence) -> np.ndarray:
        """Bayes' rule on the image's states ``prior`` (``medmm.notes.update_states``); a checkpoint with
        independent findings (no states) adds each finding's log likelihood ratio (and its ancestors') to its own
        log-odds."""
        from medmm.notes import marginals, update_states

        if prior is not None:
            return marginals(update_states(prior, evidence.log_lr))
        from medmm.notes.evidence import finding_shift

        logit = np.log(np.clip(alone, 1e-7, 1 - 1e-7) / np.clip(1 - alone, 1e-7, 1))
        shift = np.array([finding_shift(evidence.log_lr, f) for f in self.findings])
        return 1 / (1 + np.exp(-(logit.astype(np.float64) + shift)))

    def looks_adult(self, image_embedding: np.ndarray) -> bool:
        """The checkpoint's adult-vs-pediatric scope check on an image embedding (False without one)."""
        scope = getattr(self.model, "scope", None)
        return scope is not None and float(scope.p_adult(image_embedding)[0]) >= 0.5

    def population(self, image_embedding: np.ndarray | None, evidence=None) -> str:
        """The scope table's population for a request: "no image"; "adult" when the film looks adult or the notes
        give an adult age (the more cautious of the two); else "child"."""
        if image_embedding is None:
            return "no image"
        from_notes = evidence is not None and evidence.population_from == "note" and evidence.population == "adult"
        return "adult" if from_notes or self.looks_adult(image_embedding) else "child"

    @staticmethod
    def tested_findings(evidence) -> set[str]:
        """Findings (and their ancestors) for which the notes carry a counted test result (SARS-CoV-2, influenza):
        what the scope table's ``with test`` rows need."""
        if evidence is None:
            return set()
        from medmm.notes.evidence import TEST_CONCEPTS

        found = {e.finding for e in evidence.used if e.counted and e.concept in TEST_CONCEPTS and e.finding}
        return found | {a for f in found for a in ancestors(f)}

    def _to_prediction(self, probs: np.ndarray, inputs: ModelInputs, img, evidence=None) -> Prediction:
        warnings = list(inputs.warnings)
        if not self.meta.trained:
            warnings.insert(0, caveats.UNTRAINED)
        ood_score = None
        img_np = None if img is None else img[0].float().cpu().numpy()
        if img_np is not None and self.ood is not None:
            ood_score = float(self.ood.score(img_np)[0])
            ood = caveats.out_of_distribution(ood_score, self.ood.threshold)
            warnings += [ood] if ood else []
        findings = {f: float(p) for f, p in zip(self.findings, probs)}
        thresholds = dict(self.meta.thresholds)
        population = self.population(img_np, evidence)
        calls, coherence = decide(findings, thresholds, self.scope, population, self.tested_findings(evidence))
        positive = tuple(c.finding for c in calls if c.called)
        warnings += coherence
        if img_np is not None:
            adult_auc = getattr(getattr(self.model, "scope", None), "adult_auc", None)
            warnings += caveats.adult_film(population, self.scope, adult_auc=adult_auc,
                                           adult_by_film=population == "adult" and self.looks_adult(img_np))
        if self.gate is None:
            warnings += caveats.header_views(s.metadata.view for s in inputs.scans)
        modalities = tuple(m for m, present in (("image", img is not None), ("notes", bool(inputs.notes))) if present)
        return Prediction(
            findings=findings, thresholds=thresholds, positive=positive, modalities=modalities,
            image_embedding=img_np,
            ood_score=ood_score, ood_threshold=None if self.ood is None else self.ood.threshold,
            warnings=tuple(warnings), scan_metadata=tuple(s.metadata.to_dict() for s in inputs.scans),
            calls=calls, population=population,
            checkpoint={"name": self.meta.name, "version": self.meta.medmm_version, "trained": self.meta.trained,
                        "sha256": self.meta.weights_sha256},
        )

