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
from typing import Sequence, Union

import numpy as np
import torch

from medmm.models.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from medmm.io import RADIOGRAPH_MODALITIES, Scan, load_scans
from medmm.calls import decide, load_scope
from medmm.gate import load_gate
from medmm.labels import ancestors
from medmm.prediction import Prediction
from medmm.text import strip_controls
from medmm.models.transforms import to_model_input

log = logging.getLogger(__name__)

ScanInput = Union[str, Path, bytes, Scan]
MAX_NOTES_CHARS = 20_000       # more than any clinical indication; longer input is cut (with a warning)
MAX_SCANS = 8                  # views per request


class InputError(ValueError):
    """A request the pipeline cannot answer (no inputs, too many scans, ...); message is user-facing."""


def clean_notes(notes: str | None) -> tuple[str | None, list[str]]:
    """Strip control characters and excess whitespace; cap the length. Returns (notes or None, warnings)."""
    if notes is None:
        return None, []
    warnings: list[str] = []
    if len(notes) > MAX_NOTES_CHARS:
        notes = notes[:MAX_NOTES_CHARS]
        warnings.append(f"Notes longer than {MAX_NOTES_CHARS:,} characters were cut to that length.")
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
    """Loaded once per process; ``predict`` is safe to call from several threads (no per-request state on self)."""

    def __init__(self, model, meta, ood, device: str = "cpu", runtime=None, scope=None, gate=None) -> None:
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
        self.batcher = None  # medmm.service.ImageBatcher: groups concurrent image-encoder forwards (service layer)
        # idle power (W) per machine-wide energy counter, measured once by a server at start-up
        # (medmm.service.configure_from_env); each request's meter subtracts its share. Empty: nothing subtracted.
        self.idle_watts: dict[str, float] = {}
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
                    warnings.append(f"Modality {s.metadata.modality} is not a radiograph; the model was trained on "
                                    "chest radiographs only, so its output for this scan is not meaningful.")
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
        name = (lambda i: "This image") if n == 1 else (lambda i: f"Scan {i + 1} of {n}")
        results = [{"scan": i + 1, "p_chest_radiograph": round(c.p_chest, 4), "chest_radiograph": c.chest,
                    "p_lateral": round(c.p_lateral, 4) if c.chest else None, "lateral": c.lateral and c.chest,
                    "set_aside": False} for i, c in enumerate(checks)]
        refused = [i for i, c in enumerate(checks) if not c.chest]
        if refused:
            which = "; ".join(f"{name(i)} does not look like a chest radiograph (probability that it is one: "
                              f"{checks[i].p_chest:.2f})" for i in refused)
            return (f"{which}. medmm analyses frontal chest radiographs only; photographs, documents, radiographs of "
                    "other body parts, CT or MR slices and cropped figures are refused, and nothing of this request "
                    "was analysed. Upload the chest film itself (DICOM, PNG or JPEG)."), results, []
        header_lateral = [s.metadata.view is not None and s.metadata.view not in ("AP", "PA") for s in loaded]
        lateral = [i for i, c in enumerate(checks) if c.lateral or header_lateral[i]]
        how = {i: (f"from the pixels, probability {checks[i].p_lateral:.2f}" if checks[i].lateral
                   else f"view {loaded[i].metadata.view} in the DICOM header") for i in lateral}
        for i in lateral:
            results[i]["set_aside"] = True
        if len(lateral) == n:
            which = "; ".join(f"{name(i)} looks like a lateral or other non-frontal view ({how[i]})" for i in lateral)
            return (f"{which}. The model reads frontal (PA/AP) chest films only, so nothing was analysed: add the "
                    "frontal film of the study."), results, []
        for i in lateral:
            warnings.append(f"{name(i)} looks like a lateral or other non-frontal view ({how[i]}). The model reads "
                            "frontal (PA/AP) chest films only, so this view was set aside: the findings come from the "
                            "frontal view(s).")
        return None, results, [i for i in range(n) if i not in lateral]

    def _tokenize(self, notes: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenised notes, LRU-cached by sha256 (a re-sent note skips the tokenizer; cached tensors are shared
        read-only, never modified in place)."""
        key = hashlib.sha256(notes.encode("utf-8", "surrogatepass")).hexdigest()
        with self._text_lock:
            if key in self._tok_cache:
                self._tok_cache.move_to_end(key)
                return self._tok_cache[key]
        tok = self.model.text_encoder.tokenize([notes])
        out = (tok["input_ids"], tok["attention_mask"])
        with self._text_lock:
            self._tok_cache[key] = out
            while len(self._tok_cache) > 256:
                self._tok_cache.popitem(last=False)
        return out

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
        key = hashlib.sha256(inputs.notes.encode()).hexdigest()  # notes text itself is never kept
        with self._text_lock:
            if key in self._text_cache:
                self._text_cache.move_to_end(key)
                return self._text_cache[key]
        expert = self.model.notes_expert_features([inputs.notes])
        if self.runtime is not None and self.runtime.text is not None:  # exported encoder (+ bag of words)
            feat = self.model.join_text_features(*self.runtime.encode_text(inputs.input_ids, inputs.attention_mask),
                                                 expert)
        else:
            feat = self.model.encode_text(inputs.input_ids, inputs.attention_mask, expert)
        with self._text_lock:
            self._text_cache[key] = feat
            while len(self._text_cache) > 256:
                self._text_cache.popitem(last=False)
        return feat

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
        pred = self._to_prediction(probs, inputs, img, evidence)
        extra = [] if evidence is None else self._evidence_warnings(pred, alone, evidence, pretest)
        return replace(pred, warnings=pred.warnings + tuple(extra), notes_evidence=evidence,
                       image_findings=None if alone is None else dict(zip(self.findings, map(float, alone))),
                       pretest=pretest, prior_states=prior)

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

    def _evidence_warnings(self, pred: Prediction, alone: np.ndarray | None, evidence, pretest) -> list[str]:
        """Say what the notes did to a call, with the evidence that did it; notes alone: where they started."""
        from medmm.notes.evidence import POPULATION_PLURAL

        out: list[str] = []

        def because(finding: str) -> str:
            family = {finding, *ancestors(finding)}
            used = [e.label() for e in evidence.used if e.counted and e.finding in family]
            return "; ".join(used) if used else "no counted evidence"

        if alone is not None:
            image_calls, _ = decide(dict(zip(self.findings, map(float, alone))), pred.thresholds, self.scope,
                                    pred.population)
            by_image = [c.finding for c in image_calls if c.called]
            for f in (f for f in pred.positive if f not in by_image):
                out.append(f"{f} is called with the notes' evidence, not on the image alone (image alone "
                           f"{alone[self.findings.index(f)]:.2f}, with the notes {pred.findings[f]:.2f}: "
                           f"{because(f)}).")
            for f in (f for f in by_image if f not in pred.positive):
                out.append(f"{f} would be called on the image alone ({alone[self.findings.index(f)]:.2f}) but the "
                           f"notes' evidence lowers it to {pred.findings[f]:.2f} ({because(f)}); review the image.")
        else:
            out.append(f"From the notes alone (no image): a pre-test probability of pneumonia of "
                       f"{pretest['probability']:.2f} for {POPULATION_PLURAL[evidence.population]} "
                       f"({pretest['source'].split(' (')[0]}) "
                       "updated by the notes' published likelihood ratios. No Finding and the pneumonia subtypes "
                       "cannot be judged without a film.")
        if evidence.population_from == "default" and evidence.used:
            out.append("The notes do not give the patient's age and there is no image to judge it from: the adult "
                       "likelihood ratios were used.")
        if evidence.read_chars is not None:
            out.append(f"Only the first {evidence.read_chars:,} characters of the notes were read for clinical "
                       "evidence; put the relevant history, examination and results first.")
        if evidence.capped:
            out.append(f"The notes' clinical evidence for {', '.join(evidence.capped)} was capped at a likelihood "
                       "ratio "
                       "of 10 (correlated findings are not independent evidence).")
        return out

    def looks_adult(self, image_embedding: np.ndarray) -> bool:
        """The checkpoint's adult-vs-pediatric scope check on an image embedding (False without one)."""
        scope = getattr(self.model, "scope", None)
        return scope is not None and float(scope.p_adult(image_embedding)[0]) >= 0.5

    def scope_warnings(self, population: str, image_embedding: np.ndarray | None = None) -> list[str]:
        """Plain-language warning for a film outside the population the model is measured to work on (adult films
        for the default model), with the scope table's figures."""
        if population != "adult":
            return []
        why = "the notes give an adult age" if image_embedding is not None and not self.looks_adult(image_embedding) \
            else "judged from the film"
        out_of_scope = [r for (pop, _), r in self.scope.items() if pop == "adult" and r.call != "yes"]
        if self.scope and not out_of_scope:
            return []
        figures = "; ".join(f"{r.finding}: {r.figure()}" for r in out_of_scope
                            if r.value is not None and r.finding in ("No Finding", "Pneumonia"))
        if out_of_scope:
            return [f"Adult film ({why}). The default model learned mostly from young children's films (Kermany, "
                    "ages 1-5) and is not reliable on adults, so on adult films it calls no finding that it has not "
                    f"been measured to assess and drafts no normal study ({figures}). The probabilities are shown "
                    "for research only; see the model card."]
        auc = getattr(getattr(self.model, "scope", None), "adult_auc", None) or {}
        measured = (f" on unseen adult NIH patients it separated normal from abnormal films with an AUC of "
                    f"{auc['auc']:.2f} (95% CI {auc['ci95'][0]:.2f}-{auc['ci95'][1]:.2f}, n={auc['n']})"
                    if auc.get("auc") is not None else "")
        return [f"This looks like an adult chest film. The default model learned mostly from young children's films "
                f"(Kermany, ages 1-5) and is much less reliable on adults:{measured}. Read these probabilities as "
                "low-confidence; see the model card."]

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
            warnings.insert(0, "UNTRAINED checkpoint: these numbers are placeholders for wiring, not predictions.")
        ood_score = None
        img_np = None if img is None else img[0].float().cpu().numpy()
        if img_np is not None and self.ood is not None:
            ood_score = float(self.ood.score(img_np)[0])
            if ood_score > self.ood.threshold:
                warnings.append("This image does not look like the chest radiographs the model was trained on "
                                f"(out-of-distribution score {ood_score:.2f} > {self.ood.threshold:.2f}); "
                                "treat the output with extra caution.")
        findings = {f: float(p) for f, p in zip(self.findings, probs)}
        thresholds = dict(self.meta.thresholds)
        population = self.population(img_np, evidence)
        calls, coherence = decide(findings, thresholds, self.scope, population, self.tested_findings(evidence))
        positive = tuple(c.finding for c in calls if c.called)
        warnings += coherence
        if img_np is not None:
            warnings += self.scope_warnings(population, img_np)
        other_views = sorted({str(s.metadata.view) for s in inputs.scans if s.metadata.view not in (None, "AP", "PA")})
        if other_views and self.gate is None:
            warnings.append(f"View {', '.join(other_views)} (from the DICOM header): the model was trained on frontal "
                            "(AP/PA) chest films only, so its output for this view is not meaningful.")
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

