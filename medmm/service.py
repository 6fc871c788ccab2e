"""One request end to end — load, predict, (explain), draft report — metered per stage.

The CLI and the Gradio app both call ``run_request``; neither does preprocessing, thresholds or rendering itself.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from medmm import DISCLAIMER
from medmm.energy import EnergyMeter, EnergyRecord, measure_idle_baseline
from medmm.pipeline import ModelInputs, Pipeline, ScanInput
from medmm.prediction import Prediction


@dataclass
class RequestResult:
    prediction: Prediction
    inputs: ModelInputs
    report: Any | None            # medmm.report.Report
    explanation: Any | None       # medmm.explain.Explanation
    energy: EnergyRecord
    latency_s: float
    stage_latency_s: dict[str, float] = field(default_factory=dict)
    study_warnings: tuple[str, ...] = ()   # scans of several patients / studies (medmm.study)
    explanation_check: dict[str, Any] | None = None   # medmm.explain.saliency_check: faithfulness + method agreement
    # the other analysed views of a multi-view request, each mapped too: ((Explanation, check or None), ...)
    other_views: tuple[tuple[Any, dict[str, Any] | None], ...] = ()

    @property
    def warnings(self) -> list[str]:
        """Every warning of the request, once: prediction (scope, OOD, untrained), the scans' study check,
        internal consistency of the outputs, then the drafter's own."""
        from medmm.report import consistency_warnings

        drafted = self.report.warnings if self.report is not None else ()
        return list(dict.fromkeys(w for w in (*self.prediction.warnings, *self.study_warnings,
                                              *consistency_warnings(self.prediction), *drafted) if w))

    def to_json(self) -> dict[str, Any]:
        """The object ``python -m medmm predict --json`` prints."""
        p = self.prediction
        return {
            "status": p.status,
            "refusal": p.refusal,
            "gate": list(self.inputs.gate) if self.inputs is not None else [],
            "findings": p.findings,
            "thresholds": p.thresholds,
            "positive": list(p.positive),
            "calls": [p.call(f).to_dict() for f in p.findings],
            "population": p.population,
            "modalities": list(p.modalities),
            "report": self.report.to_text() if self.report is not None else "",
            "energy": self.energy.to_dict(),
            "latency_s": round(self.latency_s, 4),
            "stage_latency_s": {k: round(v, 4) for k, v in self.stage_latency_s.items()},
            "ood_score": p.ood_score,
            "ood_threshold": p.ood_threshold,
            "warnings": self.warnings,
            "scans": list(p.scan_metadata),
            "checkpoint": p.checkpoint,
            **p.evidence_json(),
            "disclaimer": DISCLAIMER,
        }


STAGE_LABELS = {"load": "Loading scans and notes", "inference": "Running the model",
                "explanation": "Computing and checking the explanation", "report": "Drafting the report"}


def run_request(pipeline: Pipeline, scans: Sequence[ScanInput] = (), notes: str | None = None, *,
                report: bool = True, explain: dict[str, Any] | None = None, check_explanation: bool = False,
                on_stage: Callable[[str, int, int], None] | None = None) -> RequestResult:
    """Load -> inference -> (explanation) -> (report), each stage timed and metered.

    ``explain``: keyword arguments for ``medmm.explain.explain`` (e.g. ``{"finding": "Pneumonia", "method": "gradcam"}``),
    or None to skip explanations; ``check_explanation`` adds the map's faithfulness and agreement with a second
    method (``medmm.explain.saliency_check``, in the explanation stage). ``on_stage(name, index, total)`` is called as
    each stage starts (progress bars).
    """
    stages = ["load", "inference", *(["explanation"] if explain is not None else []), *(["report"] if report else [])]
    from medmm.study import study_warnings

    t_start = time.perf_counter()
    explanation = drafted = checked = None
    others: tuple = ()
    with EnergyMeter(baseline_watts=pipeline.idle_watts) as meter:
        def stage(name: str):  # the progress callback, then the meter's stage (which also times it)
            if on_stage is not None:
                on_stage(name, stages.index(name), len(stages))
            return meter.stage(name)

        with stage("load"):
            inputs = pipeline.prepare(scans, notes)
        across = tuple(study_warnings(inputs.scans))
        with stage("inference"):
            prediction = pipeline.predict_prepared(inputs)
        if prediction.status == "refused":   # the input gate: nothing to explain, nothing to draft
            explain, report = None, False
        if explain is not None:
            with stage("explanation"):
                explanation, checked = _explain_view(pipeline, inputs, prediction, explain, check_explanation, 0)
                n_views = 0 if inputs.pixels is None else int(inputs.pixels.shape[1])
                others = tuple(_explain_view(pipeline, inputs, prediction, explain, check_explanation, v)
                               for v in range(1, n_views) if "view" not in explain)
        if report:
            from medmm.report import draft_report

            with stage("report"):
                ranked = prediction if not inputs.notes else \
                    replace(prediction, notes_embedding=pipeline.notes_embedding(inputs))  # sentence ranking only
                drafted = draft_report(ranked, inputs.notes, extra_warnings=across)
    stage_s = {name: meter.record.stages[name].duration_s for name in stages
               if name in meter.record.stages}  # timed once, by the meter
    return RequestResult(prediction, inputs, drafted, explanation, meter.record,
                         time.perf_counter() - t_start, stage_s, across, checked, others)


def _explain_view(pipeline: Pipeline, inputs, prediction, explain: dict[str, Any], check: bool, view: int):
    """One view's explanation and (with ``check``) its saliency check, which knows whether the explained finding is
    assessed on this film (the scope table: a map of a finding not assessed is never offered to locate it)."""
    from medmm.explain.attribution import explain as run_explain

    explanation = run_explain(pipeline, inputs, prediction, **({"view": view} | explain))
    checked = None
    if check:
        from medmm.explain.saliency_check import check_saliency

        checked = check_saliency(pipeline, inputs, explanation)
        if checked is not None and explanation.finding in prediction.findings:
            checked["finding_in_scope"] = prediction.call(explanation.finding).in_scope
    return explanation, checked


# ============================================================================================ batching
BATCHING_ENV = "MEDMM_BATCHING"          # 1/on: group concurrent image-encoder calls (see ImageBatcher)
MAX_BATCH_ENV = "MEDMM_MAX_BATCH"        # images per grouped forward (default 16)
BATCH_WAIT_ENV = "MEDMM_BATCH_WAIT_MS"   # how long the worker waits for company after the first call (default 2)

log = logging.getLogger(__name__)


class ImageBatcher:
    """Groups concurrent image-encoder calls into one forward; every caller gets exactly its own rows back.

    One worker thread owns the encoder. A caller puts its ``[N, 3, S, S]`` views in a queue and blocks on a
    future; the worker takes the first waiting call, then everything else already queued (waiting at most
    ``max_wait_s`` for more) up to ``max_batch`` images, runs ONE forward on the concatenation, and hands each
    caller the slice of rows that came from its own input (the order of concatenation = the order of slicing;
    the encoder is row-independent: eval-mode, no batch statistics). At low load a call waits at most
    ``max_wait_s``; under load, calls that arrive during a forward ride together in the next one.

    ``encode`` is the pipeline's forward-only encoder (``EncoderRuntime.encode_image_batch`` or the torch model
    under ``inference_mode``). An exception in a forward is raised in every caller of that batch.
    """

    def __init__(self, encode: Callable[[Any], Any], max_batch: int = 16, max_wait_s: float = 0.002) -> None:
        self.encode, self.max_batch, self.max_wait_s = encode, max(1, int(max_batch)), max(0.0, float(max_wait_s))
        self._queue: "queue.Queue[tuple[Any, Future] | None]" = queue.Queue()
        self._lock = threading.Lock()
        self.batches = 0
        self.images = 0
        self.largest = 0
        self._thread = threading.Thread(target=self._loop, name="medmm-image-batcher", daemon=True)
        self._thread.start()

    def __call__(self, x: Any) -> Any:
        """``[N, 3, S, S]`` -> ``[N, F]`` (blocks until the grouped forward that carries ``x`` is done)."""
        if not self._thread.is_alive():
            raise RuntimeError("the image batcher was closed")
        fut: Future = Future()
        self._queue.put((x, fut))
        return fut.result()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"batches": self.batches, "images": self.images, "largest_batch": self.largest,
                    "mean_batch": round(self.images / self.batches, 2) if self.batches else None,
                    "max_batch": self.max_batch, "max_wait_ms": self.max_wait_s * 1000}

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _collect(self, first: tuple[Any, Future]) -> list[tuple[Any, Future]]:
        items, n = [first], int(first[0].shape[0])
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_batch:
            left = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:  # closing: finish this batch first
                self._queue.put(None)
                break
            items.append(nxt)
            n += int(nxt[0].shape[0])
        return items

    def _loop(self) -> None:
        import torch

        while True:
            first = self._queue.get()
            if first is None:
                return
            items = self._collect(first)
            try:
                # no_grad, not inference_mode: callers may use the rows as constants in an autograd graph
                # (explanations), which inference tensors cannot join
                with torch.no_grad():
                    out = self.encode(torch.cat([x for x, _ in items]) if len(items) > 1 else items[0][0])
                i = 0
                for x, fut in items:
                    n = int(x.shape[0])
                    fut.set_result(out[i:i + n].clone())  # own storage: no caller holds a view of the batch
                    i += n
                with self._lock:
                    self.batches += 1
                    self.images += i
                    self.largest = max(self.largest, i)
            except BaseException as e:  # noqa: BLE001 - every caller of the batch gets the error
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)


def batcher_for(pipeline: Pipeline, max_batch: int | None = None, max_wait_ms: float | None = None) -> ImageBatcher:
    """An :class:`ImageBatcher` over ``pipeline``'s image encoder (the runtime's, else the torch model's), for the
    pipeline a server builds with it (``pipeline.for_serving(batcher=...)``): predictions, occlusion and explanation
    features then go through it. Defaults: ``$MEDMM_MAX_BATCH`` (16) images, ``$MEDMM_BATCH_WAIT_MS`` (2) ms."""
    max_batch = max_batch or int(os.environ.get(MAX_BATCH_ENV, "16"))
    wait_ms = float(os.environ.get(BATCH_WAIT_ENV, "2")) if max_wait_ms is None else max_wait_ms
    batcher = ImageBatcher(pipeline.image_encoder_forward(), max_batch=max_batch, max_wait_s=wait_ms / 1000)
    log.info("image batching on (max batch %d, wait %.1f ms, encoder %s)", max_batch, wait_ms,
             getattr(pipeline, "runtime_name", "torch"))
    return batcher


def batching_from_env(pipeline: Pipeline) -> ImageBatcher | None:
    """``MEDMM_BATCHING=1`` (or on/true/yes): a batcher for ``pipeline`` (:func:`batcher_for`); otherwise None."""
    if os.environ.get(BATCHING_ENV, "").strip().lower() in ("1", "on", "true", "yes"):
        return batcher_for(pipeline)
    return None


THREADS_ENV = "MEDMM_TORCH_THREADS"      # torch intra-op threads of a server process


def serving_pipeline(pipeline: Pipeline, concurrency: int = 1) -> tuple[Pipeline, dict[str, Any]]:
    """The pipeline a server serves, built from the loaded ``pipeline`` with the settings of the environment, applied
    once at start-up (the app calls this), and the settings applied:

    * ``MEDMM_TORCH_THREADS``: torch intra-op threads. Default: 1 when several requests run at once
      (``concurrency`` > 1): the requests are the parallelism, and two libgomp teams on two shared cores spin at
      every barrier (measured: Grad-CAM + note tokens 63 ms with 1 thread vs 3.4 s with 2 on the loaded box,
      docs/bench.md). Otherwise torch's default.
    * ``MEDMM_BATCHING``: the served pipeline's batcher, see :func:`batching_from_env`.
    * every runtime graph run once here, in one thread (``GraphModel.warm``): first calls of OpenVINO from two
      request threads at once deadlocked a served app.
    * the idle power of machine-wide energy counters (RAPL, NVML; ``energy.measure_idle_baseline``, 2 s while
      nothing runs), the served pipeline's ``idle_watts``: every request's energy then excludes what the idle machine
      would have drawn meanwhile. Nothing is measured where only the CPU-time estimate exists (it has no idle share).
    """
    batcher, idle_watts, applied = _server_settings(pipeline, concurrency)
    graphs = getattr(pipeline, "graphs", None)   # None: a torch pipeline (or a stand-in without a runtime)
    if graphs is not None:
        graphs.warm()                   # every graph's first run here, before requests run them side by side
    return pipeline.for_serving(batcher=batcher, idle_watts=idle_watts), applied


def _server_settings(pipeline: Pipeline, concurrency: int) -> tuple[ImageBatcher | None, dict[str, float], dict[str, Any]]:
    """(batcher or None, idle watts, settings applied), in this order: torch threads, batching, idle power."""
    import torch

    applied: dict[str, Any] = {"concurrency": concurrency}
    raw = os.environ.get(THREADS_ENV, "").strip()
    threads = int(raw) if raw else (1 if concurrency > 1 else None)
    if threads:
        torch.set_num_threads(max(1, threads))
    applied["torch_threads"] = torch.get_num_threads()
    batcher = batching_from_env(pipeline)
    applied["batching"] = batcher is not None
    applied["runtime"] = getattr(pipeline, "runtime_name", "torch")
    idle_watts = measure_idle_baseline()
    applied["idle_watts"] = {k: round(v, 2) for k, v in idle_watts.items()}
    log.info("server: %s", applied)
    return batcher, idle_watts, applied
