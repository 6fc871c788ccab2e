"""One request end to end — load, predict, (explain), draft report — metered per stage.

The CLI and the Gradio app both call ``run_request``; neither does preprocessing, thresholds or rendering itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

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
            "warnings": list(p.warnings),
            "scans": list(p.scan_metadata),
            "checkpoint": p.checkpoint,
            "disclaimer": "Research decision support; not a diagnosis. Drafts require review by a qualified clinician.",
        }


def run_request(pipeline: Pipeline, scans: Sequence[ScanInput] = (), notes: str | None = None, *,
                report: bool = True, explain: dict[str, Any] | None = None) -> RequestResult:
    """Load -> inference -> (explanation) -> (report), each stage timed and metered.

    ``explain``: keyword arguments for ``medmm.explain.explain`` (e.g. ``{"finding": "Pneumonia", "method": "gradcam"}``),
    or None to skip explanations.
    """
    stage_s: dict[str, float] = {}
    t_start = time.perf_counter()
    explanation = drafted = None
    with EnergyMeter() as meter:
        with meter.stage("load"):
            t = time.perf_counter()
            inputs = pipeline.prepare(scans, notes)
            stage_s["load"] = time.perf_counter() - t
        with meter.stage("inference"):
            t = time.perf_counter()
            prediction = pipeline.predict_prepared(inputs)
            stage_s["inference"] = time.perf_counter() - t
        if explain is not None:
            from medmm.explain import explain as run_explain

            with meter.stage("explanation"):
                t = time.perf_counter()
                explanation = run_explain(pipeline, inputs, prediction, **explain)
                stage_s["explanation"] = time.perf_counter() - t
        if report:
            from medmm.report import draft_report

            with meter.stage("report"):
                t = time.perf_counter()
                drafted = draft_report(prediction, inputs.notes)
                stage_s["report"] = time.perf_counter() - t
    return RequestResult(prediction, inputs, drafted, explanation, meter.record,
                         time.perf_counter() - t_start, stage_s)
