"""Pure formatting for the Gradio app: tables, panel text and export files from a ``RequestResult``.

Why a module of its own: ``app.py`` stays a thin layer of widgets and handlers, and everything it shows can
be unit-tested without gradio or a browser. This module never imports gradio (medmm never does); values are
plain Python / numpy / pandas objects that gradio components accept as they are.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmm import DISCLAIMER  # noqa: F401  (the one wording; the app's banner)
from medmm.explain.methods import DEFAULT_METHOD
from medmm.prediction import Prediction

log = logging.getLogger(__name__)

MOST_PROBABLE = "most probable"
FINDINGS_HEADERS = ["Finding", "Probability", "Threshold", "Positive"]
FINDINGS_COLUMN_WIDTHS = ["30%", "24%", "23%", "23%"]   # all four columns readable on a 390 px phone screen
IDLE_STATUS = "Results appear here after **Analyze**."
RUNNING_STATUS = "**Analysing…** Previous results were cleared."
DONE_STATUS = "Analysis complete: review the warnings, then the findings and the draft."
# One line per training source (keys of CheckpointMeta.training["records"]); unknown sources are named as they are.
TRAINING_SOURCES = {
    "kermany": "pediatric chest radiographs (Kermany et al. 2018; Guangzhou; children aged 1-5)",
    "covid": "adult radiographs of the COVID-19 image data collection (many cropped from publications), with notes",
    "iu": "clinical indications of Indiana University chest X-ray reports (text only, no images)",
    "nih": "adult NIH ChestX-ray14 radiographs (normal and pneumonia films)",
    "nih_adult": "adult NIH ChestX-ray14 radiographs (normal and pneumonia films)",
    "nih_sample": "adult NIH ChestX-ray14 radiographs (one per patient across the archive)",
}
POSITIVE_ROW_STYLE = "background-color: #fde2e1; font-weight: 600"
EXPORT_NAMES = {"text": "medmm_report.txt", "json": "medmm_result.json", "sr": "medmm_report_sr.dcm"}

# Only these metadata fields are ever shown, in this order (medmm.io already whitelists; this is the UI's own
# guard, so a field added to ScanMetadata later is not displayed until someone decides it is safe to).
METADATA_FIELDS: tuple[tuple[str, str], ...] = (
    ("source_format", "Format"),
    ("modality", "Modality"),
    ("view", "View"),
    ("size", "Size (rows x columns)"),
    ("frames", "Frames / slices"),
    ("pixel_spacing_mm", "Pixel spacing (mm)"),
    ("bits_stored", "Bits stored"),
    ("photometric_interpretation", "Photometric interpretation"),
    ("inverted", "Inverted for display (MONOCHROME1)"),
    ("windowing", "Windowing applied"),
    ("transfer_syntax", "Transfer syntax"),
    ("notes", "Loader notes"),
)


# ------------------------------------------------------------------------------------------------ findings
def finding_choices(findings: Sequence[str]) -> list[str]:
    """Dropdown choices for the finding to explain: ``most probable`` first, then the model's findings."""
    return [MOST_PROBABLE, *findings]


def explain_request(choice: str | None, method: str) -> dict[str, Any]:
    """``explain=`` argument of ``run_request``: ``finding=None`` lets medmm.explain pick the most probable."""
    return {"finding": None if choice in (None, "", MOST_PROBABLE) else choice, "method": method}


NOTHING_ASSESSED = "Not assessed on this film: see the table and the warnings"


def findings_label(pred: Prediction) -> dict[str, float] | str:
    """``{finding: probability}`` for a ``gr.Label`` (it sorts and shows the top entries): the findings the model
    assesses on this film only; out-of-scope ones (adult films, COVID-19 from the image alone) stay in the table
    with their reason, not in the headline chart. When none is assessed, a sentence says so (an empty chart reads as
    a failure)."""
    shown = {f: round(float(p), 4) for f, p in pred.findings.items() if pred.call(f).in_scope}
    return shown if shown or not pred.findings else NOTHING_ASSESSED


def findings_rows(pred: Prediction) -> list[list[Any]]:
    """One row per finding in model order: name, probability, stored threshold, and the call's label
    (``medmm.calls.Call.label``: "YES (likely)", "no: competing subtype", "not assessed", "no (unlikely)")."""
    return [[f, round(float(p), 3), round(float(pred.thresholds[f]), 3), pred.call(f).label]
            for f, p in pred.findings.items()]


def findings_table(pred: Prediction):
    """``pandas`` Styler of :func:`findings_rows` with positive findings highlighted (``gr.Dataframe`` renders it)."""
    import pandas as pd

    frame = pd.DataFrame(findings_rows(pred), columns=FINDINGS_HEADERS)
    positive = frame["Finding"].isin(pred.positive)
    return frame.style.apply(lambda row: [POSITIVE_ROW_STYLE if positive[row.name] else ""] * len(row), axis=1) \
        .format(precision=3)


def empty_findings_table():
    """The operating-point table with its headers and no rows (before and between requests)."""
    import pandas as pd

    return pd.DataFrame(columns=FINDINGS_HEADERS)


def refused_status(message: str) -> str:
    """The status panel after the input gate refused the request (not a chest radiograph, lateral views only)."""
    return (f"**Not analysed:** {message}\n\nNo probabilities, calls or draft report are given for it (the previous "
            "results were cleared).")


def failed_status(message: str) -> str:
    """The status panel after a failed request: the reason, once, and that nothing is shown for it."""
    return (f"**The request failed:** {message}\n\nNo result is shown and no report can be downloaded for it "
            "(the previous results were cleared).")


def landing_markdown(findings: Sequence[str], training: Mapping[str, Any] | None) -> str:
    """What the model outputs, whom it was trained on, and where its model card is (top of the page)."""
    records = dict((training or {}).get("records") or {})
    population = "; ".join(f"{n:,} {TRAINING_SOURCES.get(k, k)}" for k, n in records.items()) or "not recorded"
    return (f"**Outputs:** probabilities for {len(findings)} findings only: {', '.join(findings)}. Nothing else on "
            "the film (heart, pleura, bones, devices, other lung findings) is assessed by this model.\n\n"
            f"**Trained on:** {population}. Outside these populations (e.g. adult films other than the COVID-19 "
            "collection) the outputs are less reliable; see the warnings of each request.\n\n"
            "**Model card:** open *About this model (model card)* below for the data, metrics and known failure "
            "modes (also `MODEL_CARD.md` in the repository).")


def model_card_markdown(path: str | Path) -> str:
    """MODEL_CARD.md for display in the app (figures, which the app does not serve, become a pointer)."""
    import re

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return "The model card (MODEL_CARD.md) is not available on this server."
    return re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"_(figure: \1, in MODEL_CARD.md in the repository)_", text)


def positive_summary(pred: Prediction) -> str:
    """Which findings are called, and (one line each) what is not assessed on this film and why."""
    calls = [pred.call(f) for f in pred.findings]
    head = ("Called (at or above the operating threshold, by the rules in the model card): "
            + ", ".join(f"**{c.finding}** ({c.band})" for c in calls if c.called) + "."
            if pred.positive else "No finding is called.")
    withheld = [f"- {c.finding} not called: {c.detail}" for c in calls if c.band == "withheld" and c.detail]
    scope = [f"- {c.detail}" for c in calls if not c.in_scope and c.finding in ("No Finding", "Pneumonia")]
    if any(not c.in_scope for c in calls) and not scope:
        scope = [f"- {c.detail}" for c in calls if not c.in_scope and c.probability >= c.threshold]
    return "\n".join([head, *withheld, *scope])


# ------------------------------------------------------------------------------------------------ warnings
def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


_ASSERTION_WORDS = {"present": "present", "absent": "negated (absent)", "measured": "measured",
                    "possible": "possible / queried", "historical": "historical", "other person": "about someone else",
                    "hypothetical": "hypothetical"}


def notes_evidence_markdown(pred: Prediction) -> str:
    """What the notes contributed, as the clinician reads it: every concept found, how it was asserted, the
    likelihood ratio applied and its source, or why it was not used; the image-alone figures beside the final
    ones. Empty without notes."""
    from medmm.notes.evidence import POPULATION_PLURAL, TEST_CONCEPTS

    ev = pred.notes_evidence
    if ev is None:
        return ""
    whose = {"note": "the notes give the age", "image": "judged from the film (the notes give no age)",
             "default": "the notes give no age and there is no film: adult figures"}[ev.population_from]
    who = POPULATION_PLURAL.get(ev.population, ev.population)
    lines = [f"**Notes as evidence** — likelihood ratios for **{who}** ({whose}). Red raises the finding, "
             "blue lowers it. Each figure is quoted from its source, some through a secondary summary (model card, "
             "*Notes as evidence*); the image model and the notes are combined as if independent, so agreeing "
             "evidence can look more certain than it is."]
    used = [e for e in ev.items if e.used]
    if used:
        lines += ["", "| in the notes | read as | evidence | source |", "|---|---|---|---|"]
        for e in used:
            how = _ASSERTION_WORDS.get(e.assertion, e.assertion) + (f"; {e.reason}" if e.reason and e.counted else "")
            if e.concept in TEST_CONCEPTS:
                how = "positive result" if e.lr_kind == "LR+" else "negative result"
            effect = f"{e.lr_kind} {e.lr:g} for {e.finding}: **{'raises' if e.lr > 1 else 'lowers'}**"
            if not e.counted:
                effect += f" (not counted: {e.reason.split('; ')[-1]})"
            lines.append(f"| {_cell(e.phrase or e.text)} | {_cell(how)} | {_cell(effect)} | "
                         f"{_cell(e.source.split(' (')[0])} |")
    else:
        lines += ["", "No concept with a published likelihood ratio was found in the notes: they do not change the "
                      "image's answer."]
    unused = [e for e in ev.items if not e.used]
    if unused:
        said = [(e.phrase or e.text, _ASSERTION_WORDS.get(e.assertion, e.assertion), e.reason) for e in unused]
        lines += ["", "Not used: " + "; ".join(f"*{_cell(t)}* ({_cell(a)}: {_cell(r)})" for t, a, r in said) + "."]
    if ev.context:
        lines += ["", "Context: " + ", ".join(c.replace("_", " ") for c in ev.context) + " (shown, not evidence)."]
    if pred.image_findings is not None and not ev.empty:
        moved = [f"{f} {pred.image_findings[f]:.2f} → {pred.findings[f]:.2f}" for f in pred.findings
                 if abs(pred.findings[f] - pred.image_findings[f]) >= 0.005]
        if moved:
            lines += ["", "Image alone → with the notes: " + "; ".join(moved) + "."]
    elif pred.pretest is not None:
        lines += ["", f"No image: from a pre-test probability of pneumonia of {pred.pretest['probability']:.2f} "
                      f"({_cell(pred.pretest['source'])})."]
    return "\n".join(lines)


def warnings_markdown(warnings: Iterable[str]) -> str:
    """Warnings (untrained checkpoint, out-of-distribution image, non-radiograph modality, cut notes) as a list."""
    items = [w for w in warnings if w]
    if not items:
        return "No warnings for this request."
    return "**Warnings**\n\n" + "\n".join(f"- {w}" for w in items)


# ------------------------------------------------------------------------------------------------ energy
def _num(x: float) -> str:
    return f"{x:.3g}" if x else "0"


def energy_markdown(energy: Mapping[str, Any], latency_s: float | None = None) -> str:
    """Energy panel: total J / Wh / gCO2e, method and uncertainty, and a per-stage table."""
    head = (f"**{_num(energy['joules'])} J** = {_num(energy['wh'])} Wh ≈ **{_num(energy['gco2e'])} g CO2e** "
            f"(grid {energy.get('grid_intensity_g_per_kwh', 0):g} gCO2e/kWh)")
    if latency_s is not None:
        head += f" · latency {latency_s:.2f} s"
    lines = [head, "", f"Method: `{energy['method']}`. {energy.get('uncertainty', '')}".rstrip()]
    stages = energy.get("stages") or {}
    if stages:
        lines += ["", "| Stage | Energy (J) | Time (s) |", "|---|---:|---:|"]
        lines += [f"| {name} | {_num(s['joules'])} | {s['duration_s']:.2f} |" for name, s in stages.items()]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ metadata
def _metadata_value(meta: Mapping[str, Any], key: str) -> str:
    if key == "size":
        return f"{meta.get('rows', '?')} x {meta.get('columns', '?')}"
    value = meta.get(key)
    if value is None or value == [] or value == ():
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "pixel_spacing_mm":
        return " x ".join(f"{float(v):.3g}" for v in value)
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return str(value)


def metadata_table(scan_metadata: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"headers", "data"}`` for a ``gr.Dataframe``: one row per whitelisted field, one column per scan."""
    headers = ["Field", *(f"Scan {i + 1}" for i in range(len(scan_metadata)))]
    if not scan_metadata:
        return {"headers": ["Field", "Value"], "data": [["Scans", "none (notes only)"]]}
    data = [[label, *(_metadata_value(m, key) for m in scan_metadata)] for key, label in METADATA_FIELDS]
    return {"headers": headers, "data": data}


# ------------------------------------------------------------------------------------------------ viewer
def viewer_stack(scan: Any) -> np.ndarray:
    """The scan as loaded (windowing applied) as uint8 ``[D, H, W]``: the volume for a CT series, else one slice."""
    pixels = scan.volume_pixels if getattr(scan, "volume_pixels", None) is not None else scan.pixels[None]
    return (np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def viewer_frame(stacks: Sequence[np.ndarray], scan_index: int | float = 0, slice_index: int | float = 0) -> np.ndarray | None:
    """One 2-D frame from :func:`viewer_stack` outputs; indices are clamped (sliders send floats)."""
    if not stacks:
        return None
    stack = stacks[min(max(int(scan_index), 0), len(stacks) - 1)]
    return stack[min(max(int(slice_index), 0), stack.shape[0] - 1)]


def middle_slice(stack: np.ndarray) -> int:
    return stack.shape[0] // 2


# ------------------------------------------------------------------------------------------------ explanation
def modality_contribution(modality: Mapping[str, Any] | None) -> dict[str, float] | None:
    """``{"image (for Pneumonia)": share, "notes (for Pneumonia)": share}`` (leave-one-out shares from
    ``Explanation.modality``, named with the finding they refer to) for a ``gr.Label``."""
    if not modality or not modality.get("present"):
        return None
    finding = modality.get("finding")
    suffix = f" (for {finding})" if finding else ""
    return {f"{m}{suffix}": round(float(modality.get(f"share_{m}") or 0.0), 4) for m in modality["present"]}


def _p(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f}"


def explanation_markdown(explanation: Any, check: Mapping[str, Any] | None = None,
                         other_views: Sequence[tuple[Any, Mapping[str, Any] | None]] = ()) -> str:
    """What the overlay and the token colours show: method, finding, probability, the map's own faithfulness
    and agreement result (``medmm.explain.saliency_check``), modality effects, caveats; for a multi-view request,
    what to do with each other view's map."""
    if explanation is None:
        return ""
    from medmm.explain.methods import METHOD_NAMES
    from medmm.explain.saliency_check import advice, details

    target = f"**{explanation.finding}** (p = {explanation.probability:.2f})"
    if explanation.heatmap_scan is None:
        lines = [f"No scan: only the note words are explained, for {target}."]
    else:
        lines = [f"**{METHOD_NAMES.get(explanation.method, explanation.method)}** for {target}: the map shows the "
                 "areas this method attributes to the finding, which is not proof of where the model looked.",
                 f"**{advice(check, METHOD_NAMES)}**", details(check, METHOD_NAMES)]
        if other_views:
            lines[0] = f"Scan {explanation.view + 1}: " + lines[0]
        for exp, chk in other_views:
            lines.append(f"Scan {exp.view + 1}: **{advice(chk, METHOD_NAMES)}** {details(chk, METHOD_NAMES)}")
    m = explanation.modality or {}
    if m.get("p_both") is not None:
        lines.append(f"p(image + notes) {_p(m['p_both'])} · image only {_p(m.get('p_image_only'))} · "
                     f"notes only {_p(m.get('p_notes_only'))}.")
    elif m.get("note"):
        lines.append(str(m["note"]))
    lines += [f"_{n}_" for n in explanation.notes]
    return "\n\n".join(lines)


# ------------------------------------------------------------------------------------------------ consistency
def consistency_markdown(contradictions: Sequence[Any]) -> str:
    """``medmm.report.check_consistency`` output as bullets: why each sentence disagrees, and the sentence."""
    if not contradictions:
        return "No contradictions found between the report text and the model output."
    lines = [f"**{len(contradictions)} possible contradiction(s) with the model output; please review:**", ""]
    lines += [f"- {c.explanation} Sentence: \"{' '.join(c.sentence.split())}\"" for c in contradictions]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ explanation drawing
def overlay_caption(explanation: Any, check: Mapping[str, Any] | None) -> str:
    """The overlay's own caption, two short lines: the method and its checks (failed ones first in capitals, and
    where the evidence lies when it is not in the lung fields), then what to do with the map ("Do not use this map to
    locate the finding" unless every check passed)."""
    from medmm.explain.methods import METHOD_NAMES
    from medmm.explain.saliency_check import DO_NOT_LOCATE, WHERE, outside_region, verdict

    name = METHOD_NAMES.get(explanation.method, explanation.method)
    if not check:
        return f"{name}: map not checked\n{DO_NOT_LOCATE}; not a diagnosis"
    short = name if len(name) <= 10 else explanation.method.upper()   # "Integrated Gradients" -> "IG"
    v = verdict(check)
    other = METHOD_NAMES.get(check["compared_with"], check["compared_with"])
    other_short = other if len(other) <= 10 else check["compared_with"].upper()
    where = outside_region(check)
    place = WHERE[where[0]][1] if where else "outside the lungs"
    # per check: (long, short) words; None: not measured, left out
    words = {"faithful": {True: ("better than random", "beats random"), False: ("NO BETTER THAN RANDOM",) * 2},
             "agree": {True: (f"{other} agrees", f"{other_short} agrees"),
                       False: (f"METHODS DISAGREE (vs {other})", "METHODS DISAGREE")},
             "in_lungs": {True: ("evidence in the lung fields", "in lung fields"), False: (f"mostly {place}", place)}}
    parts = [(v[k] is False, words[k][v[k]]) for k in words if v[k] is not None]
    failed = [w for bad, w in parts if bad]
    tries = [f"{name}: {', '.join(w[0] for _, w in parts)}", f"{name}: {', '.join(w[1] for _, w in parts)}"]
    if failed:   # too long: only the failed checks, then their count (and where the evidence lies)
        count = f"all {len(failed)}" if len(failed) == len(parts) else f"{len(failed)} of {len(parts)}"
        tries += [f"{name}: {', '.join(w[1] for w in failed)}", f"{short}: {', '.join(w[1] for w in failed)}",
                  f"{short}: {count} checks failed" + (f", mostly {place}" if v["in_lungs"] is False else "")]
    else:
        tries.append(f"{short}: {', '.join(w[1] for _, w in parts)}")
    if not parts:
        tries = [f"{name}: the checks could not be run"]
    # the figure is ~576 px wide at 17 px DejaVu Sans: about 68 lower-case characters, capitals ~1.45x as wide
    first = next((t for t in tries if len(t) + 0.45 * sum(c.isupper() for c in t) <= 66), tries[-1])
    if v["located"]:
        second = "May help you look at this area; not proof, not a diagnosis"
    elif v.get("in_scope") is False:
        second = f"{DO_NOT_LOCATE}; not assessed here"
    elif v["located"] is False:
        second = f"{DO_NOT_LOCATE}; not a diagnosis"
    else:
        second = f"{DO_NOT_LOCATE}: not fully checked"
    return f"{first}\n{second}"


def overlay_image(explanation: Any, scans: Sequence[Any], check: Mapping[str, Any] | None = None,
                  other_views: Sequence[tuple[Any, Mapping[str, Any] | None]] = ()) -> np.ndarray | None:
    """Saliency overlay on the explained scan as an RGB array, drawn by medmm.explain.render (None without a heatmap);
    a multi-view request's other views (``RequestResult.other_views``) side by side, each with its own caption."""
    if explanation is None or explanation.heatmap_scan is None or explanation.view is None:
        return None
    from medmm.explain.render import overlay_array

    panels = []
    for exp, chk in ((explanation, check), *other_views):
        if exp is None or exp.heatmap_scan is None or exp.view is None:
            continue
        scan = f"scan {exp.view + 1}: " if other_views else ""
        panels.append(overlay_array(scans[exp.view].pixels, exp.heatmap_scan,
                                    f"{scan}{exp.finding} (p = {exp.probability:.2f})",
                                    caption=overlay_caption(exp, chk)))
    if len(panels) == 1:
        return panels[0]
    height = max(p.shape[0] for p in panels)
    gap = np.full((height, 12, 3), 255, np.uint8)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate([x for p in padded for x in (p, gap)][:-1], axis=1)


def note_tokens(explanation: Any, notes: str | None) -> list[tuple[str, float | None]] | None:
    """Note words for a ``gr.HighlightedText``: the words of each concept used as evidence (and of its cue, "no",
    "denies") scored in [-1, 1] (red raises the explained finding, blue lowers it); other words plain. None
    without notes."""
    if explanation is None or not explanation.tokens:
        return None
    from medmm.explain.render import token_highlights

    return token_highlights(explanation.tokens, notes)


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


# ------------------------------------------------------------------------------------------------ examples
EXAMPLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ""}


def example_rows(folder: str | Path, finding: str = MOST_PROBABLE, method: str = DEFAULT_METHOD) -> tuple[list[list[Any]], list[str]]:
    """Rows ``[[files], notes, finding, method]`` and labels from ``folder``.

    Each example is an image (``NN_name.ext``) with optional notes in ``NN_name.txt`` beside it; a ``.txt``
    without an image is a notes-only example. The ``NN_`` prefix orders them and is dropped from the label.
    """
    folder = Path(folder)
    stems: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.upper().startswith(("README", "LICENSE")) or path.name.startswith("."):
            continue
        entry = stems.setdefault(path.stem, {"files": [], "notes": ""})
        if path.suffix.lower() == ".txt":
            entry["notes"] = path.read_text(encoding="utf-8").strip()
        elif path.suffix.lower() in EXAMPLE_SUFFIXES:
            entry["files"].append(str(path))
    rows, labels = [], []
    for stem, entry in sorted(stems.items()):
        rows.append([entry["files"] or None, entry["notes"], finding, method])
        labels.append(stem.split("_", 1)[-1].replace("_", " "))
    return rows, labels
