"""medmm Gradio app: chest radiograph(s) + clinical notes -> findings, saliency, draft report, energy.

Research decision support, never a diagnosis. A thin layer over ``medmm.service.run_request``: the handlers
only call medmm and map its results onto components (formatting lives in ``medmm.app_format``). Per-user data
is kept in ``gr.State``; nothing about a request is logged except exception types.

Run: ``python app.py`` (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; MEDMM_CHECKPOINT picks a checkpoint).
"""

from __future__ import annotations

import html
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
from medmm import server  # noqa: E402  (no gradio import)

CACHE_DIR = server.prepare_cache(Path(__file__).resolve().parent)  # private GRADIO_TEMP_DIR, before gradio

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402

from medmm import app_format as fmt  # noqa: E402
from medmm.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402
from medmm.explain import METHOD_NAMES, METHODS  # noqa: E402
from medmm.io import ScanError  # noqa: E402
from medmm.pipeline import InputError, Pipeline  # noqa: E402
from medmm.deid import scrub_identifiers  # noqa: E402
from medmm.report import check_consistency  # noqa: E402
from medmm.service import STAGE_LABELS, RequestResult, configure_from_env, run_request  # noqa: E402

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
MAX_FILE_SIZE = "50mb"
# one analysis at a time by default (torch already uses both cores of a small CPU box); with MEDMM_BATCHING=1
# several run at once and their image-encoder forwards are grouped (medmm.service.ImageBatcher; docs/bench.md)
QUEUE_CONCURRENCY = int(os.environ.get("MEDMM_QUEUE_CONCURRENCY") or 1)
STATE_TTL_S = 3600
GENERIC_ERROR = "The request failed unexpectedly. Please check the inputs and try again."

class ScanFiles(gr.File):
    """``gr.File`` whose API-page example is a shipped example radiograph, not Gradio's default online PDF: the
    snippet on the "Use via API" page then runs offline (on the server's machine, or from a checkout of the repo)."""

    is_template = True          # rendered by gradio's own File component
    EXAMPLE = EXAMPLES_DIR / "02_child_bacterial_pneumonia.jpeg"

    def example_payload(self):
        from gradio_client import handle_file

        return [handle_file(str(self.EXAMPLE))]

    def example_value(self):
        return [str(self.EXAMPLE)]


PIPELINE = Pipeline.from_checkpoint(os.environ.get("MEDMM_CHECKPOINT") or DEFAULT_CHECKPOINT)
SERVER = configure_from_env(PIPELINE, QUEUE_CONCURRENCY)  # MEDMM_BATCHING, MEDMM_TORCH_THREADS (medmm.service)


# ------------------------------------------------------------------------------------------------ handlers
@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn every failure into a ``gr.Error`` a clinician can act on; log unexpected ones by type only (no PHI)."""
    try:
        yield
    except gr.Error:
        raise
    except (ScanError, InputError) as exc:  # messages are user-facing and identifier-free by contract
        raise gr.Error(html.escape(str(exc)), print_exception=False) from None
    except Exception as exc:  # noqa: BLE001 - never show or log an unexpected exception's message
        log.error("request failed: %s", type(exc).__name__)
        raise gr.Error(GENERIC_ERROR, print_exception=False) from None


def _request_dir() -> Path:
    """A fresh folder inside Gradio's cache: files there are served and removed by ``delete_cache``."""
    cache = Path(get_upload_folder())
    cache.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="medmm-", dir=cache))


def _exports(session: fmt.SessionResult, report_text: str) -> tuple[str, str, str | None]:
    """Write the downloads of ``report_text`` after de-identification (medmm.deid): the .txt, JSON and SR never
    carry identifiers a clinician typed into the report (the draft itself is unchanged by it)."""
    try:
        report_text = server.text_input(report_text, "report", server.MAX_REPORT_CHARS)
    except ValueError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    files = fmt.write_exports(_request_dir(), session, scrub_identifiers(report_text))
    return str(files.text), str(files.json), None if files.sr is None else str(files.sr)


def analyze(files: list[str] | None, notes: str | None, finding: str | None, method: str,
            progress: gr.Progress = gr.Progress()) -> dict:
    """Predict, explain and draft a report for the uploaded scans and notes (the ``/predict`` API endpoint).

    Progress moves per stage (load, inference, explanation, report, then drawing the results); a failure
    raises ``gr.Error`` with a message a clinician can act on.
    """
    def on_stage(name: str, index: int, total: int) -> None:
        progress(index / (total + 1), desc=f"{STAGE_LABELS.get(name, name)} ({index + 1}/{total + 1})")

    with _user_errors():
        try:
            notes = server.text_input(notes, "notes", 1_000_000) or None  # the pipeline cuts long notes itself
        except ValueError as exc:
            raise InputError(str(exc)) from None
        request = fmt.explain_request(finding, method)
        result = run_request(PIPELINE, list(files or []), notes, explain=request, check_explanation=True,
                             on_stage=on_stage)
        n = len(result.stage_latency_s)
        progress(n / (n + 1), desc=f"Drawing the results and exports ({n + 1}/{n + 1})")
        return _present(result, fmt.session_result(result))


def _present(result: RequestResult, session: fmt.SessionResult) -> dict:
    """Every output component's value for one analysis (formatting itself lives in medmm.app_format)."""
    stacks, exp = session.stacks, result.explanation
    text_file, json_file, sr_file = _exports(session, session.draft_text)
    check = result.explanation_check
    return {
        findings_label: fmt.findings_label(result.prediction),
        findings_table: fmt.findings_table(result.prediction),
        positive_md: fmt.positive_summary(result.prediction),
        warnings_md: fmt.warnings_markdown(fmt.all_warnings(session)),
        overlay_image: fmt.overlay_image(exp, result.inputs.scans, check),
        explanation_md: fmt.explanation_markdown(exp, check),
        tokens_text: fmt.note_tokens(exp, result.inputs.notes),
        modality_label: fmt.modality_contribution(exp.modality if exp else None),
        report_box: session.draft_text,
        consistency_md: "",
        download_text: text_file, download_json: json_file, download_sr: sr_file,
        energy_md: fmt.energy_markdown(result.energy.to_dict(), result.latency_s),
        metadata_df: fmt.metadata_table(result.prediction.scan_metadata),
        viewer_image: fmt.viewer_frame(stacks, 0, fmt.middle_slice(stacks[0]) if stacks else 0),
        scan_slider: gr.Slider(maximum=max(len(stacks), 2), value=1, visible=len(stacks) > 1),
        slice_slider: _slice_slider(stacks[0] if stacks else None),
        state: session,
    }


def _slice_slider(stack: np.ndarray | None) -> gr.Slider:
    depth = 1 if stack is None else stack.shape[0]
    return gr.Slider(maximum=max(depth, 2), value=depth // 2 + 1, visible=depth > 1)  # a slider needs min < max


def clear_outputs() -> list:
    """A request starts: every output (panels, downloads, state) is emptied, so nothing of the previous
    patient stays on screen or in a download, whatever happens next."""
    empty = {
        findings_label: None, findings_table: fmt.empty_findings_table(), positive_md: "", warnings_md: "",
        overlay_image: None, explanation_md: "", tokens_text: None, modality_label: None, report_box: "",
        consistency_md: "", download_text: None, download_json: None, download_sr: None, energy_md: "",
        metadata_df: fmt.metadata_table(()), viewer_image: None, scan_slider: gr.Slider(value=1, visible=False),
        slice_slider: gr.Slider(value=1, visible=False), state: None,
    }
    return [empty[c] for c in OUTPUTS] + [fmt.RUNNING_STATUS, None]


def analyze_ui(files: list[str] | None, notes: str | None, finding: str | None, method: str,
               progress: gr.Progress = gr.Progress()) -> tuple[list | None, str]:
    """The Analyze button: run :func:`analyze`; on failure show the message once, in the status panel, and
    leave every output empty (no error badge over each panel, no stale result)."""
    try:
        values = analyze(files, notes, finding, method, progress=progress)
    except gr.Error as exc:
        return None, fmt.failed_status(str(exc.message))
    return [values[c] for c in OUTPUTS], fmt.DONE_STATUS


def show_results(pending: list | None) -> list:
    """Distribute the finished analysis onto the panels (nothing changes after a failure)."""
    if pending is None:
        return [gr.skip() for _ in OUTPUTS] + [None]
    return list(pending) + [None]


def check_report(report_text: str, session: fmt.SessionResult | None) -> str:
    """List contradictions between the (edited) report text and the model output."""
    if session is None:
        raise gr.Error("Analyze a study first: the check compares the report with the model output.",
                       print_exception=False)
    try:
        report_text = server.text_input(report_text, "report", server.MAX_REPORT_CHARS)
    except ValueError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    if not report_text.strip():
        raise gr.Error("The report is empty.", print_exception=False)
    with _user_errors():
        return fmt.consistency_markdown(check_consistency(report_text, session.prediction))


def export(report_text: str, session: fmt.SessionResult | None) -> tuple[str | None, str | None, str | None]:
    """Rewrite the downloads with the report text as currently shown (clinician edits included)."""
    if session is None:
        return None, None, None
    with _user_errors():
        return _exports(session, report_text or "")


def select_scan(scan_number: float, session: fmt.SessionResult | None) -> tuple[np.ndarray | None, gr.Slider]:
    """Show scan ``scan_number`` (1-based) at its middle slice."""
    stacks = session.stacks if session else ()
    if not stacks:
        return None, _slice_slider(None)
    stack = stacks[min(max(int(scan_number) - 1, 0), len(stacks) - 1)]
    return fmt.viewer_frame([stack], 0, fmt.middle_slice(stack)), _slice_slider(stack)


def show_slice(scan_number: float, slice_number: float, session: fmt.SessionResult | None) -> np.ndarray | None:
    """Show slice ``slice_number`` (1-based) of scan ``scan_number``."""
    return fmt.viewer_frame(session.stacks if session else (), int(scan_number) - 1, int(slice_number) - 1)


# ------------------------------------------------------------------------------------------------ layout
with gr.Blocks(title="medmm: chest X-ray + notes decision support (research demo)", analytics_enabled=False,
               delete_cache=(3600, 3600)) as demo:
    state = gr.State(None, time_to_live=STATE_TTL_S)
    gr.Markdown("# medmm: chest radiograph + clinical notes")
    gr.Markdown(f"**{fmt.DISCLAIMER}**", elem_id="disclaimer")
    gr.Markdown(fmt.landing_markdown(PIPELINE.findings, PIPELINE.meta.training), elem_id="about")
    if not PIPELINE.meta.trained:
        gr.Markdown("**This server runs an UNTRAINED checkpoint: all numbers are placeholders for wiring.**",
                    elem_classes=["medmm-warning"])

    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            files_in = ScanFiles(label="Scans: PNG, JPEG or DICOM (any extension); a CT series as several files",
                               file_count="multiple", file_types=None, height=140, elem_id="scans")
            notes_in = gr.Textbox("", label="Clinical notes (optional; no names or identifiers please)", lines=4,
                                  max_lines=12, placeholder="e.g. 3 days of fever and productive cough, crackles right base.",
                                  elem_id="notes")
            with gr.Row():
                finding_in = gr.Dropdown(fmt.finding_choices(PIPELINE.findings), value=fmt.MOST_PROBABLE,
                                         label="Finding to explain", scale=2)
                method_in = gr.Radio([(METHOD_NAMES[m], m) for m in METHODS], value=METHODS[0],
                                     label="Explanation method", scale=3)
            analyze_btn = gr.Button("Analyze", variant="primary", elem_id="analyze")
            api_predict = gr.Button("predict (API)", visible=False)   # trigger of the /predict API endpoint only
        with gr.Column(scale=6):
            status_md = gr.Markdown(fmt.IDLE_STATUS, elem_id="status")
            warnings_md = gr.Markdown("", label="Warnings", elem_id="warnings", elem_classes=["medmm-warning"])
            findings_label = gr.Label(label="Findings (calibrated probability)", num_top_classes=5,
                                      show_heading=False, elem_id="findings")
            findings_table = gr.Dataframe(fmt.empty_findings_table(), headers=fmt.FINDINGS_HEADERS, interactive=False,
                                          label="Operating point (stored threshold per finding)", wrap=True,
                                          elem_id="findings-table", column_widths=fmt.FINDINGS_COLUMN_WIDTHS)
            positive_md = gr.Markdown(label="Positive findings")

    example_rows, example_labels = fmt.example_rows(EXAMPLES_DIR, fmt.MOST_PROBABLE, METHODS[0])
    gr.Examples(example_rows, inputs=[files_in, notes_in, finding_in, method_in], example_labels=example_labels,
                cache_examples=False, label="Examples (click to load, then Analyze)")

    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            overlay_image = gr.Image(label="Saliency overlay for the explained finding (read its caption: "
                                           "faithfulness and agreement were checked on this request)",
                                     interactive=False, height=360, format="png", elem_id="overlay")
            explanation_md = gr.Markdown(label="Explanation details")
            tokens_text = gr.HighlightedText(label="Note words: red supports, blue argues against the finding",
                                             show_legend=False, elem_id="tokens")
            modality_label = gr.Label(label="Modality contribution (leave-one-out share)", show_heading=False,
                                      elem_id="modality")
        with gr.Column(scale=5):
            report_box = gr.Textbox(label="Draft report (editable; requires clinician review)",
                                    lines=14, max_lines=30, interactive=True, elem_id="report")
            check_btn = gr.Button("Check consistency", size="md", elem_id="check")
            consistency_md = gr.Markdown(label="Consistency check", elem_id="consistency")
            with gr.Row():
                download_text = gr.DownloadButton("Report (.txt)", size="sm")
                download_json = gr.DownloadButton("Result (JSON)", size="sm")
                download_sr = gr.DownloadButton("DICOM SR", size="sm")
            with gr.Accordion("Energy for this request", open=True):
                energy_md = gr.Markdown(label="Energy", elem_id="energy")

    with gr.Accordion("About this model (model card)", open=False, elem_id="model-card"):
        gr.Markdown(fmt.model_card_markdown(ROOT / "MODEL_CARD.md"))

    with gr.Accordion("Scan as loaded (windowing applied) and safe metadata", open=False):
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                viewer_image = gr.Image(label="Scan as the model received it", interactive=False, height=400,
                                        format="png", image_mode="L", elem_id="viewer")
                scan_slider = gr.Slider(1, 2, value=1, step=1, label="Scan", visible=False)
                slice_slider = gr.Slider(1, 2, value=1, step=1, label="Slice", visible=False)
            with gr.Column(scale=5):
                metadata_df = gr.Dataframe(label="Scan metadata (no identifiers)", interactive=False, wrap=True,
                                           elem_id="metadata")

    pending = gr.State(None, time_to_live=STATE_TTL_S)   # one finished analysis on its way to the panels
    OUTPUTS = [findings_label, findings_table, positive_md, warnings_md, overlay_image, explanation_md, tokens_text,
               modality_label, report_box, consistency_md, download_text, download_json, download_sr, energy_md,
               metadata_df, viewer_image, scan_slider, slice_slider, state]
    inputs = [files_in, notes_in, finding_in, method_in]
    # UI: clear everything -> analyse (progress and any error in the status panel only) -> show the results
    analyze_btn.click(clear_outputs, None, [*OUTPUTS, status_md, pending], queue=False, show_progress="hidden",
                      api_visibility="private") \
        .then(analyze_ui, inputs, [pending, status_md], show_progress_on=[status_md], api_visibility="private") \
        .then(show_results, pending, [*OUTPUTS, pending], show_progress="hidden", api_visibility="private")
    # API clients: one call returns every output, a failure is an error (gradio_client raises AppError)
    api_predict.click(analyze, inputs, OUTPUTS, api_name="predict")
    check_btn.click(check_report, [report_box, state], consistency_md, api_name="check_consistency")
    # any change of the report text (typing, paste, a programmatic update) rewrites the three downloads
    report_box.change(export, [report_box, state], [download_text, download_json, download_sr], api_name="export",
                      trigger_mode="always_last", show_progress="hidden", concurrency_id="light",
                      concurrency_limit=4)
    scan_slider.input(select_scan, [scan_slider, state], [viewer_image, slice_slider], api_name="select_scan",
                      show_progress="hidden", concurrency_id="light", concurrency_limit=4)
    slice_slider.input(show_slice, [scan_slider, slice_slider, state], viewer_image, api_name="show_slice",
                       show_progress="hidden", concurrency_id="light", concurrency_limit=4)

demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=32)

CSS = """
#disclaimer { border-left: 6px solid #b42318; background: #fef3f2; padding: 8px 12px; border-radius: 4px; }
.medmm-warning { color: #7a2e0e; }
/* phone screens (390 px): the operating-point table keeps all four columns readable, words unbroken */
@media (max-width: 480px) {
  #findings-table table { font-size: 12px; }
  #findings-table th, #findings-table td { padding: 4px 3px !important; word-break: normal !important;
    overflow-wrap: normal !important; hyphens: none; }
}
"""

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes
    server.install_cleanup(CACHE_DIR)   # SIGTERM behaves like Ctrl-C; the run's cache folder is removed at exit
    demo.launch(**server.launch_kwargs(MAX_FILE_SIZE), css=CSS, footer_links=["api"])
