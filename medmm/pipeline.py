"""``Pipeline.from_checkpoint(path).predict(scans, notes) -> Prediction``: the one inference path.

The app, the CLI, the benchmark and the evaluation all call this; nothing else preprocesses or thresholds.

Two ways to run the model's forward-only stages, one answer: with the runtime's graph set cached
(``medmm.runtime.graphs.GraphModel``: preprocessing in numpy; input gate, image encoder, fusion head and notes
embedding as ONNX Runtime / OpenVINO graphs) a prediction imports no torch, and the torch model is loaded only when
something needs it (an explanation's gradients, ``model``); otherwise (``runtime="torch"``, ``graphs=False``, or a
cache that cannot be written) the torch model runs every stage, the runtime's encoders excepted. Both agree to 1e-6
(``tests/test_torch_free.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from medmm import caveats
from medmm.inputs import MAX_NOTES_CHARS, MAX_SCANS, InputError, ModelInputs, ScanInput, clean_notes  # noqa: F401
from medmm.models.checkpoint import DEFAULT_CHECKPOINT, read_meta
from medmm.models.inference import TorchModel
from medmm.io import RADIOGRAPH_MODALITIES, Scan, load_scans
from medmm.calls import decide, load_scope
from medmm.gate import load_gate, screen
from medmm.labels import ancestors
from medmm.lru import cached
from medmm.prediction import Prediction
from medmm.runtime.int8 import unchecked_contract

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CACHE_ENTRIES = 256            # notes kept in each of the pipeline's caches (tokens, features), least recent dropped


class Pipeline:
    """Loaded once per process; ``predict`` is safe to call from several threads (no per-request state on self).

    A server builds the pipeline it serves with its ``batcher`` (``medmm.service.ImageBatcher``: groups concurrent
    image-encoder forwards) and ``idle_watts`` (idle power per machine-wide energy counter, measured once at start-up;
    each request's meter subtracts its share): ``medmm.service.serving_pipeline`` -> :meth:`for_serving`."""

    def __init__(self, model, meta, ood, device: str = "cpu", runtime=None, scope=None, gate=None, *,
                 batcher: Callable | None = None, idle_watts: Mapping[str, float] | None = None,
                 checkpoint: str | Path | None = None, scope_check=None) -> None:
        """``model``: the torch model, a :class:`TorchModel` (shared), or None with ``checkpoint`` (loaded on first
        use). ``runtime``: a ``medmm.runtime.EncoderRuntime``; when it belongs to a cached graph set (``graphs``),
        every forward-only stage runs from the graphs. ``scope_check``: the checkpoint's adult-film check (default:
        the torch model's ``scope``)."""
        self._torch = model if isinstance(model, TorchModel) else TorchModel(model, checkpoint, device)
        self.meta, self.ood, self.device = meta, ood, device
        # medmm.gate.InputGate: refuses scans that are not chest radiographs, sets lateral views aside (None: off)
        self.gate = gate
        # the checkpoint's scope table (medmm.calls.load_scope): which findings may be called for which population
        self.scope = dict(scope or {})
        self._scope_check = scope_check
        self.findings: tuple[str, ...] = meta.findings
        self._temperatures = np.array([meta.temperatures[f] for f in self.findings], dtype=np.float32)
        self._text_cache: OrderedDict[str, Any] = OrderedDict()  # sha256(notes) -> features / embedding
        self._text_lock = threading.Lock()
        # medmm.runtime.EncoderRuntime: encoder forwards through ONNX Runtime / OpenVINO; None = torch
        self.runtime = runtime
        self.batcher = batcher  # medmm.service.ImageBatcher or None (each forward on its own)
        self.idle_watts: dict[str, float] = dict(idle_watts or {})  # empty: nothing subtracted
        self._tok_cache: OrderedDict[str, tuple[Any, Any]] = OrderedDict()  # sha256 -> ids, mask
        # an explicit openvino-int8 without a passed accuracy check here: every prediction says so
        contract = None if getattr(runtime, "name", None) != "openvino-int8" else unchecked_contract(runtime)
        self._runtime_caveat = None if contract is None else caveats.int8_unchecked(contract)

    @classmethod
    def from_checkpoint(cls, path: str | Path = DEFAULT_CHECKPOINT, device: str | None = None,
                        runtime: str | None = None, *, graphs: bool = True) -> "Pipeline":
        """``runtime``: ``auto`` | ``torch`` | ``onnxruntime`` | ``openvino`` (default ``$MEDMM_RUNTIME`` or auto;
        see medmm.runtime). Explanations always use the torch model.

        Under an ONNX runtime, every forward-only stage runs from the checkpoint's cached graph set without torch
        (``medmm.runtime.graphs``); a cache without it gets it now (the torch model is loaded, the graphs exported:
        ``medmm.runtime.warmup``); a cache folder that cannot be written leaves every stage in torch, with one
        warning that says so. ``graphs=False``: the torch model runs every stage but the runtime's two encoders
        (the reference the graphs are tested against)."""
        from medmm import runtime as rt
        from medmm.runtime.graphs import int8_passes, open_graphs

        device = device or rt.default_device()
        meta, gate, scope = read_meta(path), load_gate(path), load_scope(path)
        # what may run graphs already cached; auto takes openvino-int8 only where its measured contract holds here
        name = rt.resolve(runtime, device, export=False, passes=lambda r: int8_passes(meta, gate))
        found = open_graphs(meta, name, device, gate) if graphs and name != "torch" else None
        if found is None:
            return cls._with_torch(path, device, runtime, gate, scope, graphs and name != "torch")
        from medmm.models.checkpoint import load_references

        meta, ood, scope_check = load_references(path)   # the weights file is checked as load_checkpoint checks it
        if not meta.trained:
            log.warning("checkpoint %s is UNTRAINED: predictions are meaningless", path)
        return cls(None, meta, ood, device, runtime=found.encoders, scope=scope, gate=gate, checkpoint=path,
                   scope_check=scope_check)

    @classmethod
    def _with_torch(cls, path: str | Path, device: str, runtime: str | None, gate, scope,
                    warm: bool) -> "Pipeline":
        """The torch model loaded; with ``warm``, the graph set exported and used (torch stays loaded for
        explanations); without, or where the cache cannot be written, the torch model runs every stage."""
        from medmm import runtime as rt
        from medmm.models.inference import load_folded
        from medmm.runtime.graphs import int8_passes

        model, meta, ood = load_folded(path, device)
        if not meta.trained:
            log.warning("checkpoint %s is UNTRAINED: predictions are meaningless", path)
        name = rt.resolve(runtime, device, passes=lambda r: int8_passes(meta, gate))
        if warm and name != "torch":
            from medmm.runtime.cache import CacheNotWritable
            from medmm.runtime.graphs import open_graphs

            try:
                rt.warm(path, model=model, meta=meta, gate=gate)
            except CacheNotWritable as e:
                log.warning("%s: running the model in torch", e)
                name = "torch"
            else:
                found = open_graphs(meta, name, device, gate)
                return cls(model, meta, ood, device, runtime=found.encoders, scope=scope, gate=gate, checkpoint=path)
        encoders = rt.build(name, model, meta, device)
        return cls(model, meta, ood, device, runtime=None if encoders.name == "torch" else encoders, scope=scope,
                   gate=gate, checkpoint=path)

    def for_serving(self, *, batcher: Callable | None = None,
                    idle_watts: Mapping[str, float] | None = None) -> "Pipeline":
        """A pipeline over the same model (loaded or not), runtime, graphs, scope table and gate, built with a
        server's ``batcher`` and ``idle_watts`` (this one is left as it is; the new one starts with empty caches)."""
        return type(self)(self._torch, self.meta, self.ood, self.device, runtime=self.runtime, scope=self.scope,
                          gate=self.gate, batcher=batcher, idle_watts=idle_watts, scope_check=self._scope_check)

    @property
    def model(self):
        """The torch model (``medmm.models.MedMM``): loaded here on first use when the pipeline runs on graphs."""
        return self._torch.get()

    @model.setter
    def model(self, model) -> None:
        self._torch = TorchModel(model, self._torch.checkpoint, self.device)

    @property
    def torch_loaded(self) -> bool:
        """Whether the torch model (explanations' gradients) is loaded; reading this never loads it."""
        return self._torch.loaded is not None

    @property
    def temperatures(self) -> "torch.Tensor":
        """Per-finding calibration temperatures as a tensor (torch callers)."""
        import torch

        return torch.from_numpy(self._temperatures.copy())

    @property
    def scope_check(self):
        """The checkpoint's adult-vs-pediatric check on the image embedding (``ScopeCheck``), or None."""
        if self._scope_check is not None:
            return self._scope_check
        model = self._torch.loaded
        return None if model is None else getattr(model, "scope", None)

    @property
    def graphs(self):
        """The runtime's graph set (``medmm.runtime.graphs.GraphModel``) when the pipeline runs on one, else None: a
        pipeline given other encoders (the bench's copies) runs its other stages in torch again."""
        return getattr(self.runtime, "graphs", None)

    @property
    def runtime_name(self) -> str:
        return "torch" if self.runtime is None else self.runtime.name

    def _torch_stages(self):
        """``torch.inference_mode()`` around a prediction whose stages run in torch; nothing for graphs."""
        if self.graphs is not None:
            return contextlib.nullcontext()
        import torch

        return torch.inference_mode()

    # ------------------------------------------------------------------------------------------------ inputs
    def prepare(self, scans: Sequence[ScanInput] = (), notes: str | None = None, *,
                gate_inputs: bool = True) -> ModelInputs:
        """Load/validate scans and notes into the model input. Raises ScanError / InputError with clear messages.

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
        array = None
        if loaded:
            array = self._model_input([s.pixels for s in loaded])
            for s in loaded:
                if s.metadata.modality is not None and s.metadata.modality not in RADIOGRAPH_MODALITIES:
                    warnings.append(caveats.not_a_radiograph(s.metadata.modality))
        refusal, checks = None, []
        if array is not None and gate_inputs and self.gate is not None:
            refusal, checks, keep = self._gate(loaded, array, warnings)
            if refusal is None and len(keep) < len(loaded):
                loaded, array = [loaded[i] for i in keep], array[:, keep]
        # the notes are tokenized only if a draft's sentence ranking needs their embedding (``tokens``)
        return ModelInputs(loaded, array, None, None, notes, warnings, refusal, checks, device=self.device)

    def _model_input(self, pixels: list[np.ndarray]) -> np.ndarray:
        """Scans' pixels -> ``[1, V, C, S, S]`` float32: numpy with graphs, else ``transforms.to_model_input``."""
        if self.graphs is not None:
            return self.graphs.model_input(pixels)
        import torch

        from medmm.models.transforms import to_model_input

        prep = self.meta.preprocessing
        return torch.stack([to_model_input(p, prep) for p in pixels])[None].numpy()

    def _gate(self, loaded: list[Scan], array: np.ndarray, warnings: list[str]) -> tuple[str | None, list[dict], list[int]]:
        """(refusal or None, per-scan gate results, indices of the scans to analyse); warnings for set-aside views."""
        if self.graphs is not None:
            checks = self.gate.decide(self.graphs.gate_features(array[0]))
        else:
            import torch

            checks = self.gate.check(self.model.image_encoder, torch.from_numpy(array[0]).to(self.device))
        return screen(checks, [s.metadata.view for s in loaded], warnings)

    def _tokenize(self, notes: str) -> "tuple[torch.Tensor, torch.Tensor]":
        """Tokenised notes, LRU-cached by sha256 (a re-sent note skips the tokenizer; cached tensors are shared
        read-only, never modified in place)."""
        def tokenize() -> "tuple[torch.Tensor, torch.Tensor]":
            tok = self.model.text_encoder.tokenize([notes])
            return tok["input_ids"], tok["attention_mask"]

        key = hashlib.sha256(notes.encode("utf-8", "surrogatepass")).hexdigest()
        return cached(self._tok_cache, self._text_lock, key, tokenize, CACHE_ENTRIES)

    # ------------------------------------------------------------------------------------------------ model
    def tokens(self, inputs: ModelInputs) -> "tuple[torch.Tensor, torch.Tensor] | None":
        """The notes' token ids and mask ``[1, T]`` as tensors (the text encoder reads at most its ``max_tokens``),
        made on first use and kept on ``inputs``; None without notes. The torch text path reads them."""
        if not inputs.notes:
            return None
        if inputs.input_ids is None:
            ids, mask = self._tokenize(inputs.notes)
            inputs.input_ids, inputs.attention_mask = ids.to(self.device), mask.to(self.device)
        return inputs.input_ids, inputs.attention_mask

    def text_features(self, inputs: ModelInputs) -> "torch.Tensor | None":
        """The notes features of the fusion model's notes pathway ``[1, H (+ D) (+ 1)]`` (torch)."""
        if self.tokens(inputs) is None:
            return None

        def encode() -> "torch.Tensor":
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
        if not inputs.notes:
            return None
        if self.graphs is not None and self.graphs.has_notes:
            key = "embedding:" + hashlib.sha256(inputs.notes.encode()).hexdigest()
            return cached(self._text_cache, self._text_lock, key, lambda: self.graphs.notes_embedding(inputs.notes),
                          CACHE_ENTRIES)
        txt = self.text_features(inputs)
        return None if txt is None else txt[0, :self.model.text_encoder.dim].float().cpu().numpy()

    def forward_only_encoder(self):
        """The forward-only image encoder of explanations ``[N, 3, S, S] -> [N, F]``: the runtime's fp32 graph when
        its image encoder is quantised (openvino-int8: no explanation reads the int8 graph), else as predictions."""
        if self.runtime is not None and self.runtime.reference is not None:
            return self.runtime.encode_image_batch_reference
        return self._prediction_encoder()

    def _prediction_encoder(self):
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

    def _views(self, inputs: ModelInputs):
        """Per-view image features ``[1, V, F]``, computed once per request (``inputs.view_cache``): a numpy array
        from the graphs (no batcher), else a tensor from the batcher, the runtime or the torch model."""
        views = inputs.view_cache.get("views")
        if views is None and inputs.array is not None:
            if self.graphs is not None and self.batcher is None:
                b, v = inputs.array.shape[:2]
                views = self.graphs.image_features(inputs.array.reshape(b * v, *inputs.array.shape[2:]))
                views = views.reshape(b, v, -1)   # as models.model.view_features
            else:
                from medmm.models.model import view_features

                encode = self._prediction_encoder()
                views = view_features(self.model.encode_image_batch if encode is None else encode, inputs.pixels)
            inputs.view_cache["views"] = views
        return views

    def view_features(self, inputs: ModelInputs) -> "torch.Tensor | None":
        """Per-view image features ``[1, V, F]`` as a tensor, through the graphs, the batcher, the runtime or the
        torch model; computed once per request. May be an inference tensor: clone before using it under autograd."""
        views = self._views(inputs)
        if isinstance(views, np.ndarray):
            import torch

            return torch.from_numpy(views).to(self.device)
        return views

    def image_features(self, inputs: ModelInputs) -> "torch.Tensor | None":
        """Pooled image features ``[1, F]`` as a tensor: the mean over the request's views."""
        from medmm.models.model import pool_views

        views = self.view_features(inputs)
        return None if views is None else pool_views(views)

    def image_embedding(self, inputs: ModelInputs) -> np.ndarray | None:
        """Pooled image features ``[F]`` float32 (numpy): the mean over the request's views; None without scans."""
        views = self._views(inputs)
        if views is None:
            return None
        if isinstance(views, np.ndarray):
            return views.mean(1)[0]   # the view pooling of models.model.pool_views
        from medmm.models.model import pool_views

        return pool_views(views)[0].float().cpu().numpy()

    def calibrate(self, logits: "torch.Tensor") -> "torch.Tensor":
        """Per-finding temperature scaling -> probabilities."""
        import torch

        return torch.sigmoid(logits / self.temperatures.to(logits.device))

    def image_outputs(self, inputs: ModelInputs, states: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(calibrated probabilities from the image alone ``[K]`` float32, with ``states`` and a state head the
        image's state probabilities ``[L]`` float64, else None)."""
        if self.graphs is not None:
            logits, probs = self.graphs.head_outputs(self.image_embedding(inputs)[None])
            alone = (1 / (1 + np.exp(-(logits / self._temperatures))))[0].astype(np.float32)
            return alone, (probs[0].astype(np.float64) if states and probs is not None else None)
        img = self.image_features(inputs)
        alone = self.calibrate(self.model.forward_features(img, None))[0].float().cpu().numpy()
        prior = None
        if states and getattr(self.model, "state_head", None) is not None:
            prior = self.model.image_state_probs(img)[0].double().cpu().numpy()
        return alone, prior

    def predict(self, scans: Sequence[ScanInput] = (), notes: str | None = None) -> Prediction:
        with self._torch_stages():
            inputs = self.prepare(scans, notes)
            return self.predict_prepared(inputs)

    def refused(self, inputs: ModelInputs) -> Prediction:
        """The answer to a refused request: no probabilities, no calls; the reason as the one warning."""
        modalities = tuple(m for m, present in (("image", inputs.array is not None), ("notes", bool(inputs.notes)))
                           if present)
        return Prediction(findings={}, thresholds={}, positive=(), modalities=modalities,
                          warnings=(inputs.refusal,), scan_metadata=tuple(s.metadata.to_dict() for s in inputs.scans),
                          checkpoint={"name": self.meta.name, "version": self.meta.medmm_version,
                                      "trained": self.meta.trained, "sha256": self.meta.weights_sha256},
                          status="refused", refusal=inputs.refusal)

    def predict_prepared(self, inputs: ModelInputs) -> Prediction:
        """The image model's answer, updated by the notes' evidence (``medmm.notes``: concepts with assertion,
        published likelihood ratios, Bayes' rule on the image's states). The learned notes pathway of the checkpoint
        is not used for predictions (the model card says why); the notes' sentence embedding, which only the draft
        report's sentence ranking reads, is computed by ``notes_embedding`` when a report is drafted. A refused
        request (``inputs.refusal``, the input gate) gets no probabilities at all (``refused``)."""
        if inputs.refusal is not None:
            return self.refused(inputs)
        with self._torch_stages():
            img_np = self.image_embedding(inputs)
            evidence = pretest = None
            if inputs.notes:
                from medmm.notes import combine, read_note

                hint = None if img_np is None else ("adult" if self.looks_adult(img_np) else "child")
                evidence = combine(read_note(inputs.notes), hint, inputs.notes)
            alone = prior = None
            if img_np is not None:
                alone, prior = self.image_outputs(inputs, states=evidence is not None)
                probs = alone
                if evidence is not None and not evidence.empty:
                    probs = self._apply_evidence(prior, alone, evidence)
            else:
                from medmm.notes import marginals, pretest_states, update_states

                prior, pretest = pretest_states(evidence.population)
                probs = marginals(update_states(prior, evidence.log_lr))
            pred = replace(self._to_prediction(probs, inputs, img_np, evidence), notes_evidence=evidence,
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
        scope = self.scope_check
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

    def _to_prediction(self, probs: np.ndarray, inputs: ModelInputs, img_np: np.ndarray | None,
                       evidence=None) -> Prediction:
        warnings = list(inputs.warnings)
        if not self.meta.trained:
            warnings.insert(0, caveats.UNTRAINED)
        if self._runtime_caveat:
            warnings.insert(0, self._runtime_caveat)
        ood_score = None
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
            adult_auc = getattr(self.scope_check, "adult_auc", None)
            warnings += caveats.adult_film(population, self.scope, adult_auc=adult_auc,
                                           adult_by_film=population == "adult" and self.looks_adult(img_np))
        if self.gate is None:
            warnings += caveats.header_views(s.metadata.view for s in inputs.scans)
        modalities = tuple(m for m, present in (("image", img_np is not None), ("notes", bool(inputs.notes)))
                           if present)
        return Prediction(
            findings=findings, thresholds=thresholds, positive=positive, modalities=modalities,
            image_embedding=img_np,
            ood_score=ood_score, ood_threshold=None if self.ood is None else self.ood.threshold,
            warnings=tuple(warnings), scan_metadata=tuple(s.metadata.to_dict() for s in inputs.scans),
            calls=calls, population=population,
            checkpoint={"name": self.meta.name, "version": self.meta.medmm_version, "trained": self.meta.trained,
                        "sha256": self.meta.weights_sha256},
        )

