"""The report panel: what one user's analysis leaves for follow-ups (``SessionResult``), the consistency check of
an edited draft, and the downloads (text, JSON, DICOM SR)."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmm.prediction import Prediction
from medmm.serve.panels.scans import viewer_stack

log = logging.getLogger(__name__)

EXPORT_NAMES = {"text": "medmm_report.txt", "json": "medmm_result.json", "sr": "medmm_report_sr.dcm"}


# ------------------------------------------------------------------------------------------------ consistency
def consistency_markdown(contradictions: Sequence[Any]) -> str:
    """``medmm.report.check_consistency`` output as bullets: why each sentence disagrees, and the sentence."""
    if not contradictions:
        return "No contradictions found between the report text and the model output."
    lines = [f"**{len(contradictions)} possible contradiction(s) with the model output; please review:**", ""]
    lines += [f"- {c.explanation} Sentence: \"{' '.join(c.sentence.split())}\"" for c in contradictions]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ session
@dataclass(frozen=True)
class SessionResult:
    """What one user's last analysis leaves behind for follow-up actions (consistency check, exports, viewer)."""

    prediction: Prediction
    report: Any                      # medmm.report.Report
    payload: dict[str, Any]          # RequestResult.to_json()
    stacks: tuple[np.ndarray, ...]   # viewer_stack() per loaded scan, uint8
    owner: str | None = None         # the signed-in user who ran the analysis (None without a login)
    # handed to the browser that ran the analysis only; follow-ups must present it (gradio finds gr.State by a
    # session hash the client chooses, so the hash alone must not unlock a result)
    key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    # report text -> the downloads written from it (.txt, JSON, SR), by the analysis for its draft: the report box's
    # change event that follows every analysis in a browser then hands them back instead of writing them again
    exports: dict[str, tuple[str, str, str | None]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def draft_text(self) -> str:
        return self.report.to_text()

    def opens_for(self, key: Any, user: str | None) -> bool:
        """Whether a follow-up presenting ``key``, signed in as ``user``, may read this result."""
        return isinstance(key, str) and hmac.compare_digest(self.key.encode(), key.encode()) and user == self.owner


def session_result(result: Any, owner: str | None = None) -> SessionResult:
    """Keep only what follow-up actions need (no notes text beyond the scrubbed report indication)."""
    return SessionResult(result.prediction, result.report, result.to_json(),
                         tuple(viewer_stack(s) for s in result.inputs.scans), owner)


def all_warnings(session: SessionResult) -> list[str]:
    """Every warning of the request (``RequestResult.warnings``: scope, OOD, scans of several patients,
    internal consistency, drafter), falling back to prediction + report warnings."""
    found = session.payload.get("warnings") if isinstance(session.payload, Mapping) else None
    if found is None:
        found = [*session.prediction.warnings, *getattr(session.report, "warnings", ())]
    return list(dict.fromkeys(w for w in found if w))


# ------------------------------------------------------------------------------------------------ exports
@dataclass(frozen=True)
class ExportFiles:
    text: Path
    json: Path
    sr: Path | None   # None when the DICOM SR could not be written (logged by exception type only)


def edited_report(report: Any, report_text: str) -> Any:
    """The draft ``Report`` with every section of the (edited) text: see ``medmm.report.apply_edits``."""
    from medmm.report import apply_edits

    return apply_edits(report, report_text)


def write_exports(folder: str | Path, session: SessionResult, report_text: str) -> ExportFiles:
    """Write the report as shown (txt), the full result (JSON) and a DICOM Basic Text SR into ``folder``."""
    from medmm.report import to_dicom_sr

    folder = Path(folder)
    edited = report_text != session.draft_text
    text_path, json_path, sr_path = (folder / EXPORT_NAMES[k] for k in ("text", "json", "sr"))
    text_path.write_text(report_text, encoding="utf-8")
    json_path.write_text(json.dumps(result_payload(session.payload, report_text, edited), indent=2,
                                    ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    try:
        to_dicom_sr(edited_report(session.report, report_text), session.prediction, sr_path)
    except Exception as exc:  # noqa: BLE001 - the text and JSON downloads still work; never log the content
        log.warning("DICOM SR export failed: %s", type(exc).__name__)
        sr_path = None
    return ExportFiles(text_path, json_path, sr_path)


def result_payload(result_json: Mapping[str, Any], report_text: str, edited: bool) -> dict[str, Any]:
    """The JSON download: ``RequestResult.to_json()`` with the report text as shown (possibly edited)."""
    payload = dict(result_json)
    payload["report"] = report_text
    payload["report_edited"] = edited
    return payload
