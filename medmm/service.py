"""One request end to end — load, predict, (explain), draft report — metered per stage.

The CLI and the Gradio app both call ``run_request``; neither does preprocessing, thresholds or rendering itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from medmm.energy import EnergyMeter, EnergyRecord
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
    explanation_check: dict[str, Any] | None = None   # medmm.saliency_check: faithfulness + method agreement

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
            "findings": p.findings,
            "thresholds": p.thresholds,
            "positive": list(p.positive),
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
            "disclaimer": "Research decision support; not a diagnosis. Drafts require review by a qualified clinician.",
        }


STAGE_LABELS = {"load": "Loading scans and notes", "inference": "Running the model",
                "explanation": "Computing and checking the explanation", "report": "Drafting the report"}


def run_request(pipeline: Pipeline, scans: Sequence[ScanInput] = (), notes: str | None = None, *,
                report: bool = True, explain: dict[str, Any] | None = None, check_explanation: bool = False,
                on_stage: Callable[[str, int, int], None] | None = None) -> RequestResult:
    """Load -> inference -> (explanation) -> (report), each stage timed and metered.

    ``explain``: keyword arguments for ``medmm.explain.explain`` (e.g. ``{"finding": "Pneumonia", "method": "gradcam"}``),
    or None to skip explanations; ``check_explanation`` adds the map's faithfulness and agreement with a second
    method (``medmm.saliency_check``, in the explanation stage). ``on_stage(name, index, total)`` is called as
    each stage starts (progress bars).
    """
    stages = ["load", "inference", *(["explanation"] if explain is not None else []), *(["report"] if report else [])]

    def starting(name: str) -> None:
        if on_stage is not None:
            on_stage(name, stages.index(name), len(stages))

    from medmm.study import study_warnings

    stage_s: dict[str, float] = {}
    t_start = time.perf_counter()
    explanation = drafted = checked = None
    with EnergyMeter() as meter:
        starting("load")
        with meter.stage("load"):
            t = time.perf_counter()
            inputs = pipeline.prepare(scans, notes)
            stage_s["load"] = time.perf_counter() - t
        across = tuple(study_warnings(inputs.scans))
        starting("inference")
        with meter.stage("inference"):
            t = time.perf_counter()
            prediction = pipeline.predict_prepared(inputs)
            stage_s["inference"] = time.perf_counter() - t
        if explain is not None:
            from medmm.explain import explain as run_explain

            starting("explanation")
            with meter.stage("explanation"):
                t = time.perf_counter()
                explanation = run_explain(pipeline, inputs, prediction, **explain)
                if check_explanation:
                    from medmm.saliency_check import check_saliency

                    checked = check_saliency(pipeline, inputs, explanation)
                stage_s["explanation"] = time.perf_counter() - t
        if report:
            from medmm.report import draft_report

            starting("report")
            with meter.stage("report"):
                t = time.perf_counter()
                drafted = draft_report(prediction, inputs.notes, extra_warnings=across)
                stage_s["report"] = time.perf_counter() - t
    return RequestResult(prediction, inputs, drafted, explanation, meter.record,
                         time.perf_counter() - t_start, stage_s, across, checked)
