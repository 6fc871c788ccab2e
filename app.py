"""medmm Gradio app: chest radiograph(s) + clinical notes -> findings, saliency, draft report, energy.

Research decision support, never a diagnosis. A thin layer over ``medmm.service.run_request``: the handlers
only call medmm and map its results onto components (formatting lives in ``medmm.serve.presenters``). Per-user data
is kept in ``gr.State``; nothing about a request is logged except exception types.

``build_demo(pipeline) -> gr.Blocks`` builds the page for a loaded ``Pipeline`` or a :class:`LazyPipeline`. The module's
``demo`` (what Hugging Face Spaces and ``gradio app.py`` pick up) is built on a ``LazyPipeline``: importing this file
reads the checkpoint's JSON metadata only; the model loads on the first request, or before serving when run as
``python app.py``.

API for programs: ``/predict_json`` (scans + notes + options -> the object ``python -m medmm predict --json``
prints), also an MCP tool when ``MEDMM_MCP=1``. ``/predict`` (every UI output in one call) stays, off the API page.

Run: ``python app.py`` (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; MEDMM_CHECKPOINT picks a checkpoint;
MEDMM_MCP=1 also serves the MCP endpoint at /gradio_api/mcp/).
"""

from __future__ import annotations

import html
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Union

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
from medmm.serve import server  # noqa: E402  (no gradio import)

CACHE_DIR = server.prepare_cache(Path(__file__).resolve().parent)  # private GRADIO_TEMP_DIR, before gradio

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402

from medmm.serve import presenters as fmt  # noqa: E402
from medmm.models.checkpoint import DEFAULT_CHECKPOINT, read_meta  # noqa: E402
from medmm.explain.methods import DEFAULT_METHOD, METHOD_NAMES, METHODS  # noqa: E402
from medmm.io import ScanError  # noqa: E402
from medmm.pipeline import MAX_SCANS, InputError, Pipeline  # noqa: E402
from medmm.report.deid import scrub_identifiers  # noqa: E402
from medmm.report import check_consistency  # noqa: E402
from medmm.service import STAGE_LABELS, RequestResult, run_request, serving_pipeline  # noqa: E402

server.install_log_filters()    # no values from pydicom, no inputs in gradio's error logs (again after basicConfig)

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
MAX_FILE_SIZE = "50mb"


def _default_concurrency() -> int:
    """Analyses run at once by default: one per usable core, at most 2 (each then runs torch and the runtime on one
    thread, ``medmm.service.serving_pipeline``): on the 2-core box, 16 users got more answers per second with two
    single-threaded analyses than with one two-threaded one (docs/bench.md, "More users per core"); more than two
    add memory (each analysis holds its own activations and gradients) and no cores here.
    ``MEDMM_QUEUE_CONCURRENCY`` overrides it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


QUEUE_CONCURRENCY = int(os.environ.get("MEDMM_QUEUE_CONCURRENCY") or _default_concurrency())
STATE_TTL_S = 3600
GENERIC_ERROR = "The request failed unexpectedly. Please check the inputs and try again."
MCP_ENV = "MEDMM_MCP"   # 1/on: also serve /predict_json as an MCP tool (needs the `mcp` package)
# the status line once an input changes after an analysis (beside presenters.IDLE/RUNNING/DONE_STATUS, which this
# change may not edit; it belongs there)
INPUTS_CHANGED_STATUS = ("**Inputs changed:** the previous results were cleared. Press **Analyze** to analyse "
                         "the current scans and notes.")
# the inputs of an analysis (in the order of analyze's arguments); changing any of them clears every result
ANALYSIS_INPUTS = ("files_in", "notes_in", "finding_in", "method_in")

# ------------------------------------------------------------------------------------------------ gradio's sessions and API inputs (here: app.py is the only module that imports gradio)
def install_state_holder() -> None:
    """Make gradio keep per-session state (``gr.State``) with :func:`capped_state_holder`'s policy instead of one
    LRU of every session hash ever seen (in which 100 cheap events with fresh hashes evicted every result)."""
    import gradio.routes

    if not getattr(gradio.routes.StateHolder, "medmm_capped", False):
        gradio.routes.StateHolder = capped_state_holder()


def capped_state_holder() -> type:
    """A ``gradio.state_holder.StateHolder`` that keeps two pools: sessions holding a result (at most
    ``capacity`` = :data:`medmm.serve.server.STATE_SESSIONS`, and at most :data:`medmm.serve.server.RESULTS_PER_CLIENT` per client) and sessions that
    hold nothing (at most :data:`medmm.serve.server.EMPTY_SESSIONS`). Events that run no model (clearing, an input changed) only
    ever create empty sessions, so they evict empty sessions only; a session with an event still queued or
    running is never evicted."""
    from gradio.state_holder import StateHolder

    class CappedStateHolder(StateHolder):
        medmm_capped = True

        def update(self, session_id: str) -> None:
            with self.lock:
                if session_id in self.session_data:
                    self.session_data.move_to_end(session_id)
                if len(self.session_data) > min(self.capacity, server.EMPTY_SESSIONS):
                    self._evict()

        def _evict(self) -> None:
            queue = getattr(getattr(self, "blocks", None), "_queue", None)
            pending = getattr(queue, "pending_event_ids_session", None) or {}
            empty, full = [], []
            for sid, session in self.session_data.items():           # oldest first
                if pending.get(sid):
                    continue
                holds = any(v is not None for v in session.state_data.values())
                (full if holds else empty).append(sid)
            drop = empty[:max(0, len(empty) - server.EMPTY_SESSIONS)]
            kept, per_client = [], {}
            for sid in reversed(full):                                # newest first
                client = server.session_client(sid)
                per_client[client] = per_client.get(client, 0) + 1
                (drop if client is not None and per_client[client] > server.RESULTS_PER_CLIENT else kept).append(sid)
            drop += kept[self.capacity:]
            for sid in drop:
                self.session_data.pop(sid, None)
                self.time_last_used.pop(sid, None)

    return CappedStateHolder


# ------------------------------------------------------------------------------------------------ API inputs
def guard_api(blocks: Any, types: dict[Any, tuple[type | tuple[type, ...], str]]) -> None:
    """Clear errors instead of gradio's ``{"error": null}`` (and of its log of the inputs) for malformed calls:
    too few arguments (gradio's REST ``/call`` path passes what it was sent), a value of the wrong JSON type for
    a component in ``types`` (``{component: (allowed types, message)}``; ``None`` is always allowed), and a file
    path that was never uploaded to this server."""
    import gradio as gr
    from gradio.exceptions import InvalidPathError

    by_id = {component._id: spec for component, spec in types.items()}
    preprocess = blocks.preprocess_data

    def validate_inputs(block_fn: Any, inputs: list[Any]) -> None:
        needed = len(block_fn.inputs)
        if len(inputs) < needed:
            raise gr.Error(f"This endpoint takes {needed} input values in order; the call sent {len(inputs)}. "
                           "See the API page (\"Use via API\").", print_exception=False)

    async def preprocess_data(block_fn: Any, inputs: list[Any], state: Any, explicit_call: bool = False) -> Any:
        validate_inputs(block_fn, inputs)                     # the count first, then each value's type
        for block, value in zip(block_fn.inputs, inputs):
            spec = by_id.get(getattr(block, "_id", None))
            if spec and value is not None and not isinstance(value, spec[0]):
                raise gr.Error(spec[1], print_exception=False)
        try:
            return await preprocess(block_fn, inputs, state, explicit_call)
        except gr.Error:
            raise
        except InvalidPathError:
            raise gr.Error("A file in this call was not uploaded to this server: upload it first "
                           "(POST /gradio_api/upload, or gradio_client's handle_file) and send the path it "
                           "returns.", print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - gradio's message repeats the value: type only
            raise gr.Error(f"An input of this call could not be read ({type(exc).__name__}); see the API page "
                           "(\"Use via API\") for each input's type.", print_exception=False) from None

    blocks.validate_inputs = validate_inputs
    blocks.preprocess_data = preprocess_data


install_state_holder()   # results not evictable by other clients' cheap events (before launch)


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


class LazyPipeline:
    """A pipeline that loads on first use (thread-safe, once). ``findings`` and ``meta`` come from the checkpoint's
    JSON at construction, so a page can be built without loading any weights."""

    def __init__(self, checkpoint: str | os.PathLike[str] = DEFAULT_CHECKPOINT,
                 concurrency: int = QUEUE_CONCURRENCY) -> None:
        self.checkpoint, self.concurrency = checkpoint, concurrency
        self.meta = read_meta(checkpoint)          # JSON only: a missing or corrupt checkpoint fails here, clearly
        self.findings: tuple[str, ...] = tuple(self.meta.findings)
        self.server_settings: dict[str, Any] | None = None
        self._pipeline: Pipeline | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    def get(self) -> Pipeline:
        if self._pipeline is None:
            with self._lock:
                if self._pipeline is None:
                    # built with its batcher and idle power (MEDMM_BATCHING, MEDMM_TORCH_THREADS: medmm.service)
                    pipeline, self.server_settings = serving_pipeline(Pipeline.from_checkpoint(self.checkpoint),
                                                                      self.concurrency)
                    self._pipeline = pipeline
        return self._pipeline


PipelineLike = Union[Pipeline, LazyPipeline]


class Refused(gr.Error):
    """The input gate refused the request (medmm.gate); the message says why (identifier-free by contract)."""


def _resolve(pipeline: PipelineLike) -> Pipeline:
    return pipeline.get() if isinstance(pipeline, LazyPipeline) else pipeline


def _warm(pipeline: PipelineLike) -> bool | None:
    """Whether everything a Grad-CAM analysis uses is loaded (the pipeline and the torch model its gradients need);
    None for a pipeline in another process (Ray Serve replicas load before they take requests)."""
    if isinstance(pipeline, LazyPipeline):
        if not pipeline.loaded:
            return False
        pipeline = pipeline.get()
    return getattr(pipeline, "torch_loaded", None)


def _run(pipeline: PipelineLike, files: list[str] | None, notes: str | None, **options: Any) -> RequestResult:
    """``run_request`` on this process's pipeline, or in a model replica when the page runs on Ray Serve (a pipeline
    with its own ``run_request``: ``serve_app.RemotePipeline``)."""
    remote = getattr(pipeline, "run_request", None)
    if remote is not None:
        return remote(list(files or []), notes, **options)
    return run_request(_resolve(pipeline), list(files or []), notes, **options)


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


def _exports(session: fmt.SessionResult, report_text: str, folder: Path | None = None) -> tuple[str, str, str | None]:
    """Write the downloads of ``report_text`` after de-identification (medmm.report.deid): the .txt, JSON and SR never
    carry identifiers a clinician typed into the report (the draft itself is unchanged by it)."""
    try:
        report_text = server.text_input(report_text, "report", server.MAX_REPORT_CHARS)
    except ValueError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    files = fmt.write_exports(folder or _request_dir(), session, scrub_identifiers(report_text))
    return str(files.text), str(files.json), None if files.sr is None else str(files.sr)


def _png(folder: Path, name: str, pixels: np.ndarray | None) -> str | None:
    """``pixels`` written as ``folder/name.png`` at zlib level 1 (about 4x faster than Gradio's default encoding of
    an array, measured 56 -> 15 ms for the overlay; the file is ~15 % larger). Gradio serves the path as it is."""
    if pixels is None:
        return None
    from PIL import Image

    path = folder / f"{name}.png"
    Image.fromarray(pixels).save(path, format="PNG", compress_level=1)
    return str(path)


# names of the Analyze outputs, in the order of the UI wiring and of the /predict API's return values
OUTPUTS = ("findings_label", "findings_table", "positive_md", "warnings_md", "overlay_image", "explanation_md",
           "tokens_text", "modality_label", "report_box", "consistency_md", "download_text", "download_json",
           "download_sr", "energy_md", "metadata_df", "viewer_image", "scan_slider", "slice_slider", "state",
           "session_key", "evidence_md")


def _notes_input(notes: Any) -> str | None:
    try:
        return server.text_input(notes, "notes", server.MAX_NOTES_CHARS) or None  # the pipeline cuts long notes itself
    except ValueError as exc:
        raise InputError(str(exc)) from None


def analyze(pipeline: PipelineLike, files: list[str] | None, notes: str | None, finding: str | None, method: str,
            progress: Callable[..., Any] = gr.Progress(), user: str | None = None) -> dict[str, Any]:
    """Predict, explain and draft a report for the uploaded scans and notes (the ``/predict`` API endpoint):
    every output's value by name (:data:`OUTPUTS`).

    Progress moves per stage (load, inference, explanation, report, then drawing the results); a failure
    raises ``gr.Error`` with a message a clinician can act on.
    """
    def on_stage(name: str, index: int, total: int) -> None:
        progress(index / (total + 1), desc=f"{STAGE_LABELS.get(name, name)} ({index + 1}/{total + 1})")

    with _user_errors():
        notes = _notes_input(notes)
        request = fmt.explain_request(finding, method)
        cold = _warm(pipeline) is False    # the model still loading: its work lands in this request's figures
        result = _run(pipeline, files, notes, explain=request, check_explanation=True, on_stage=on_stage)
        if result.prediction.status == "refused":
            raise Refused(html.escape(result.prediction.refusal or "not a chest radiograph"), print_exception=False)
        n = len(result.stage_latency_s)
        progress(n / (n + 1), desc=f"Drawing the results and exports ({n + 1}/{n + 1})")
        return _present(result, fmt.session_result(result, owner=user), cold=cold)


def json_result(pipeline: PipelineLike, files: list[str] | None, notes: str | None,
                report: bool = True) -> dict[str, Any]:
    """The ``/predict_json`` endpoint: the object ``python -m medmm predict --json`` prints for the same scans and
    notes (``RequestResult.to_json()``; ``report=False`` skips drafting, ``report`` is then ""). Bad input raises
    ``gr.Error`` with the same message the page shows."""
    with _user_errors():
        if report is not None and not isinstance(report, bool):
            raise InputError("The report option must be true or false.")
        result = _run(pipeline, files, _notes_input(notes), report=report is not False)
        return result.to_json()


def _present(result: RequestResult, session: fmt.SessionResult, cold: bool = False) -> dict[str, Any]:
    """Every output component's value for one analysis (formatting itself lives in medmm.serve.presenters)."""
    stacks, exp = session.stacks, result.explanation
    folder = _request_dir()
    text_file, json_file, sr_file = _exports(session, session.draft_text, folder)
    session.exports[session.draft_text] = (text_file, json_file, sr_file)
    check = result.explanation_check
    return {
        "findings_label": fmt.findings_label(result.prediction),
        "findings_table": fmt.findings_table(result.prediction),
        "positive_md": fmt.positive_summary(result.prediction),
        "warnings_md": fmt.warnings_markdown(fmt.all_warnings(session)),
        "overlay_image": _png(folder, "overlay", fmt.overlay_image(exp, result.inputs.scans, check,
                                                                   result.other_views)),
        "explanation_md": fmt.explanation_markdown(exp, check, result.other_views),
        "tokens_text": fmt.note_tokens(exp, result.inputs.notes),
        "modality_label": fmt.modality_contribution(exp.modality if exp else None),
        "report_box": session.draft_text,
        "consistency_md": "",
        "download_text": text_file, "download_json": json_file, "download_sr": sr_file,
        "energy_md": fmt.energy_markdown(result.energy.to_dict(), result.latency_s, cold=cold),
        "metadata_df": fmt.metadata_table(result.prediction.scan_metadata),
        "viewer_image": _png(folder, "scan", fmt.viewer_frame(stacks, 0, fmt.middle_slice(stacks[0]) if stacks else 0)),
        "scan_slider": gr.Slider(maximum=max(len(stacks), 2), value=1, visible=len(stacks) > 1),
        "slice_slider": _slice_slider(stacks[0] if stacks else None),
        "state": session,
        "session_key": session.key,
        "evidence_md": fmt.notes_evidence_markdown(result.prediction),
    }


def _slice_slider(stack: np.ndarray | None) -> gr.Slider:
    depth = 1 if stack is None else stack.shape[0]
    return gr.Slider(maximum=max(depth, 2), value=depth // 2 + 1, visible=depth > 1)  # a slider needs min < max


def clear_outputs(status: Any = fmt.RUNNING_STATUS) -> dict[str, Any]:
    """A request starts (or an input changed, :func:`inputs_changed`): every output (panels, downloads, state) is
    emptied, so nothing of the previous patient stays on screen or in a download, whatever happens next. By name:
    :data:`OUTPUTS`, status (``status``), pending."""
    return {
        "findings_label": None, "findings_table": fmt.empty_findings_table(), "positive_md": "", "warnings_md": "",
        "overlay_image": None, "explanation_md": "", "tokens_text": None, "modality_label": None, "report_box": "",
        "consistency_md": "", "download_text": None, "download_json": None, "download_sr": None, "energy_md": "",
        "metadata_df": fmt.metadata_table(()), "viewer_image": None,
        "scan_slider": gr.Slider(value=1, visible=False), "slice_slider": gr.Slider(value=1, visible=False),
        "state": None, "session_key": "", "evidence_md": "", "status_md": status, "pending": None,
    }


def inputs_changed(status: str | None) -> dict[str, Any]:
    """An input of the analysis (scans, notes, finding or method) changed: the results shown belong to the previous
    inputs, so every output is cleared as before a request (:func:`clear_outputs`) and the status says so, until
    Analyze runs again. ``status`` is the status line shown: while it is still the idle one nothing was analysed,
    and it stays. Cheap (no model call): it runs on every keystroke in the notes."""
    return clear_outputs(gr.skip() if status == fmt.IDLE_STATUS else INPUTS_CHANGED_STATUS)


def analyze_ui(pipeline: PipelineLike, files: list[str] | None, notes: str | None, finding: str | None, method: str,
               progress: Callable[..., Any] = gr.Progress(), user: str | None = None) -> tuple[list | None, str]:
    """The Analyze button: run :func:`analyze`; on failure show the message once, in the status panel, and
    leave every output empty (no error badge over each panel, no stale result)."""
    try:
        values = analyze(pipeline, files, notes, finding, method, progress=progress, user=user)
    except Refused as exc:
        return None, fmt.refused_status(str(exc.message))
    except gr.Error as exc:
        return None, fmt.failed_status(str(exc.message))
    return [values[c] for c in OUTPUTS], fmt.DONE_STATUS


def show_results(pending: list | None) -> list:
    """Distribute the finished analysis onto the panels (nothing changes after a failure)."""
    if pending is None:
        return [gr.skip() for _ in OUTPUTS] + [None]
    return list(pending) + [None]


def owned(session: fmt.SessionResult | None, key: Any, request: gr.Request | None) -> fmt.SessionResult | None:
    """``session`` only for the browser that ran the analysis (its session key) and, with a login, the same user;
    otherwise None, as if nothing had been analysed. Gradio finds ``gr.State`` by a client-chosen session hash:
    a second client that sets another tab's hash gets nothing without that tab's key."""
    if session is None or not session.opens_for(key, _user(request)):
        return None
    return session


def _user(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


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
        found = check_consistency(report_text, session.prediction)
        # the sentences (and the words quoted in each explanation) are the user's text: shown as plain text
        return fmt.consistency_markdown([replace(c, sentence=plain_text(c.sentence),
                                                 explanation=plain_text(c.explanation)) for c in found])


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>&\"'$=:])")


def plain_text(text: str) -> str:
    """``text`` for a Markdown component, shown literally: HTML and Markdown syntax (tags, links, emphasis, headings,
    lists, tables, images) are escaped with backslashes, so user-derived text never becomes markup."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(str(text).split()))


def export(report_text: str, session: fmt.SessionResult | None) -> tuple[str | None, str | None, str | None]:
    """Rewrite the downloads with the report text as currently shown (clinician edits included)."""
    if session is None:
        return None, None, None
    written = session.exports.get(report_text or "")
    if written and all(f is None or Path(f).is_file() for f in written):
        return written                  # the analysis's own downloads of this very text (its draft, unedited)
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
def _layout(pipeline: PipelineLike) -> dict[str, Any]:
    """Every component of the page by name (inside the caller's ``gr.Blocks``)."""
    c: dict[str, Any] = {"state": gr.State(None, time_to_live=STATE_TTL_S)}
    gr.Markdown("# medmm: chest radiograph + clinical notes")
    gr.Markdown(f"**{fmt.DISCLAIMER}**", elem_id="disclaimer")
    gr.Markdown(fmt.landing_markdown(pipeline.findings, pipeline.meta.training), elem_id="about")
    if not pipeline.meta.trained:
        gr.Markdown("**This server runs an UNTRAINED checkpoint: all numbers are placeholders for wiring.**",
                    elem_classes=["medmm-warning"])

    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            c["files_in"] = ScanFiles(label="Scans: PNG, JPEG or DICOM (any extension); a CT series as several files",
                                      file_count="multiple", file_types=None, height=140, elem_id="scans")
            c["notes_in"] = gr.Textbox("", label="Clinical notes (optional; no names or identifiers please)", lines=4,
                                       max_lines=12, elem_id="notes",
                                       placeholder="e.g. 3 days of fever and productive cough, crackles right base.")
            with gr.Row():
                c["finding_in"] = gr.Dropdown(fmt.finding_choices(pipeline.findings), value=fmt.MOST_PROBABLE,
                                              label="Finding to explain", scale=2)
                c["method_in"] = gr.Radio([(METHOD_NAMES[m], m) for m in METHODS], value=DEFAULT_METHOD,
                                          label="Explanation method", scale=3)
            c["analyze_btn"] = gr.Button("Analyze", variant="primary", elem_id="analyze")
            # triggers of the API-only endpoints (/predict, /predict_json), never shown
            c["api_predict"] = gr.Button("predict (API)", visible=False)
            c["api_predict_json"] = gr.Button("predict_json (API)", visible=False)
            c["report_in"] = gr.Checkbox(True, label="report", visible=False)
            c["json_out"] = gr.JSON(label="result", visible=False)
        with gr.Column(scale=6):
            c["status_md"] = gr.Markdown(fmt.IDLE_STATUS, elem_id="status")
            c["warnings_md"] = gr.Markdown("", label="Warnings", elem_id="warnings", elem_classes=["medmm-warning"])
            c["findings_label"] = gr.Label(label="Findings (calibrated probability)", num_top_classes=5,
                                           show_heading=False, elem_id="findings")
            c["findings_table"] = gr.Dataframe(fmt.empty_findings_table(), headers=fmt.FINDINGS_HEADERS,
                                               interactive=False, label="Operating point (stored threshold per finding)",
                                               wrap=True, elem_id="findings-table",
                                               column_widths=fmt.FINDINGS_COLUMN_WIDTHS)
            c["positive_md"] = gr.Markdown(label="Positive findings")
            c["evidence_md"] = gr.Markdown("", label="Notes as evidence", elem_id="notes-evidence")

    example_rows, example_labels = fmt.example_rows(EXAMPLES_DIR, fmt.MOST_PROBABLE, DEFAULT_METHOD)
    gr.Examples(example_rows, inputs=[c["files_in"], c["notes_in"], c["finding_in"], c["method_in"]],
                example_labels=example_labels, cache_examples=False, label="Examples (click to load, then Analyze)")

    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            # a short label: Gradio draws it over the picture's top-left corner, clear of the centred title
            c["overlay_image"] = gr.Image(label="Saliency overlay",
                                          interactive=False, height=360, format="png", elem_id="overlay")
            c["explanation_md"] = gr.Markdown(label="Explanation details", elem_id="explanation")
            c["tokens_text"] = gr.HighlightedText(label="Note words used as evidence: red raises the finding, blue "
                                                  "lowers it",
                                                  show_legend=False, elem_id="tokens")
            c["modality_label"] = gr.Label(label="Modality contribution (leave-one-out share)", show_heading=False,
                                           elem_id="modality")
        with gr.Column(scale=5):
            c["report_box"] = gr.Textbox(label="Draft report (editable; requires clinician review)",
                                         lines=14, max_lines=30, interactive=True, elem_id="report")
            c["check_btn"] = gr.Button("Check consistency", size="md", elem_id="check")
            c["consistency_md"] = gr.Markdown(label="Consistency check", elem_id="consistency")
            with gr.Row():
                c["download_text"] = gr.DownloadButton("Report (.txt)", size="sm")
                c["download_json"] = gr.DownloadButton("Result (JSON)", size="sm")
                c["download_sr"] = gr.DownloadButton("DICOM SR", size="sm")
            with gr.Accordion("Energy for this request", open=True):
                c["energy_md"] = gr.Markdown(label="Energy", elem_id="energy")

    with gr.Accordion("About this model (model card)", open=False, elem_id="model-card"):
        gr.Markdown(fmt.model_card_markdown(ROOT / "MODEL_CARD.md"))

    with gr.Accordion("Scan as loaded (windowing applied) and safe metadata", open=False):
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                c["viewer_image"] = gr.Image(label="Scan as the model received it", interactive=False, height=400,
                                             format="png", image_mode="L", elem_id="viewer")
                c["scan_slider"] = gr.Slider(1, 2, value=1, step=1, label="Scan", visible=False)
                c["slice_slider"] = gr.Slider(1, 2, value=1, step=1, label="Slice", visible=False)
            with gr.Column(scale=5):
                c["metadata_df"] = gr.Dataframe(label="Scan metadata (no identifiers)", interactive=False, wrap=True,
                                                elem_id="metadata")
    c["pending"] = gr.State(None, time_to_live=STATE_TTL_S)   # one finished analysis on its way to the panels
    # the key to the session's result (SessionResult.key), held by this browser tab only; follow-ups send it
    c["session_key"] = gr.Textbox(label="Session key", visible=False)
    return c


def _wire(c: dict[str, Any], pipeline: PipelineLike) -> None:
    """The events. On the API page: ``/predict_json`` (programs, the MCP tool), ``/predict`` (every UI output in
    one call) and the follow-ups of a ``/predict`` in the same session (``/check_consistency``, ``/export``). The
    Analyze chain (clear, analyse, show), the clearing on an input's change and the viewer sliders are UI-only
    (``api_visibility="private"``)."""
    outputs = [c[name] for name in OUTPUTS]
    inputs = [c[name] for name in ANALYSIS_INPUTS]
    cleared = (*OUTPUTS, "status_md", "pending")     # what clear_outputs empties, in this order

    def clear() -> list:
        values = clear_outputs()
        return [values[name] for name in cleared]

    def stale(status: str | None) -> list:
        values = inputs_changed(status)
        return [values[name] for name in cleared]

    def run_ui(files, notes, finding, method, request: gr.Request, progress=gr.Progress()):
        return analyze_ui(pipeline, files, notes, finding, method, progress=progress, user=_user(request))

    def predict(files: list[str] | None, notes: str | None, finding: str | None, method: str, request: gr.Request,
                progress=gr.Progress()) -> list:
        values = analyze(pipeline, files, notes, finding, method, progress=progress, user=_user(request))
        return [values[name] for name in OUTPUTS]

    # follow-ups read the session's result only with its key (and, with a login, as the same user)
    def check(report_text: str, session, session_key: str, request: gr.Request) -> str:
        return check_report(report_text, owned(session, session_key, request))

    def export_shown(report_text: str, session, session_key: str, request: gr.Request):
        return export(report_text, owned(session, session_key, request))

    def scan(scan_number: float, session, session_key: str, request: gr.Request):
        return select_scan(scan_number, owned(session, session_key, request))

    def slice_(scan_number: float, slice_number: float, session, session_key: str, request: gr.Request):
        return show_slice(scan_number, slice_number, owned(session, session_key, request))

    def predict_json(files: list[str] | None, notes: str | None, report: bool = True) -> dict[str, Any]:
        """Findings (calibrated probabilities), operating thresholds, positive findings, warnings, draft report,
        energy and latency for chest radiographs plus clinical notes: the object `python -m medmm predict --json`
        prints. Research decision support, not a diagnosis.

        Args:
            files: chest radiographs of one patient (PNG, JPEG or DICOM), several views allowed; [] for notes only.
            notes: clinical notes (free text, no identifiers), or "" for image only.
            report: also draft a report for clinician review (default true).
        """
        return json_result(pipeline, files, notes, report)

    # UI: clear everything -> analyse (progress and any error in the status panel only) -> show the results
    cleared_outputs = [c[name] for name in cleared]
    running = c["analyze_btn"].click(clear, None, cleared_outputs, queue=False, show_progress="hidden",
                                     api_visibility="private") \
        .then(run_ui, inputs, [c["pending"], c["status_md"]], show_progress_on=[c["status_md"]],
              api_visibility="private")
    showing = running.then(show_results, c["pending"], [*outputs, c["pending"]], show_progress="hidden",
                           api_visibility="private")
    # programs: one call, one JSON object (also the MCP tool); a failure is an error (gradio_client: AppError)
    c["api_predict_json"].click(predict_json, [c["files_in"], c["notes_in"], c["report_in"]], c["json_out"],
                                api_name="predict_json", show_progress="hidden")
    c["api_predict"].click(predict, inputs, outputs, api_name="predict")
    key = c["session_key"]
    c["check_btn"].click(check, [c["report_box"], c["state"], key], c["consistency_md"], api_name="check_consistency")
    # any change of the report text (typing, paste, a programmatic update) rewrites the three downloads
    downloads = [c["download_text"], c["download_json"], c["download_sr"]]
    exporting = c["report_box"].change(export_shown, [c["report_box"], c["state"], key], downloads, api_name="export",
                                       trigger_mode="always_last", show_progress="hidden", concurrency_id="light",
                                       concurrency_limit=4)
    # any change of an input (upload, removal, an example loaded, each keystroke in the notes, another finding or
    # method) clears every result of the previous inputs and cancels an analysis or export still running for them;
    # the draft report is no input (editing it rewrites the downloads, above). No model call, not queued.
    for name in ANALYSIS_INPUTS:
        c[name].change(stale, c["status_md"], cleared_outputs, queue=False, show_progress="hidden",
                       api_visibility="private", cancels=[running, showing, exporting])
    c["scan_slider"].input(scan, [c["scan_slider"], c["state"], key], [c["viewer_image"], c["slice_slider"]],
                           api_name="select_scan", api_visibility="private", show_progress="hidden",
                           concurrency_id="light", concurrency_limit=4)
    c["slice_slider"].input(slice_, [c["scan_slider"], c["slice_slider"], c["state"], key], c["viewer_image"],
                            api_name="show_slice", api_visibility="private", show_progress="hidden",
                            concurrency_id="light", concurrency_limit=4)


def build_demo(pipeline: PipelineLike) -> gr.Blocks:
    """The medmm page and its API for ``pipeline`` (a loaded ``Pipeline``, or a :class:`LazyPipeline` that loads
    on the first request). Queued: two analyses at once on two or more cores (``MEDMM_QUEUE_CONCURRENCY``)."""
    with gr.Blocks(title="medmm: chest X-ray + notes decision support (research demo)", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as blocks:
        components = _layout(pipeline)
        _wire(components, pipeline)
    blocks.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=32)
    # API calls with the wrong JSON types, too few values or never-uploaded paths: a clear error, nothing logged
    text = "The {} must be text (a JSON string) or null."
    guard_api(blocks, {components["notes_in"]: (str, text.format("notes")),
                              components["report_box"]: (str, text.format("report")),
                              components["session_key"]: (str, text.format("session key")),
                              components["report_in"]: (bool, "The report option must be true or false."),
                              components["files_in"]: (list, "The files must be a list of uploaded files ([] for "
                                                             "none).")})
    blocks.medmm_components = components      # by name, for tests and embedding
    blocks.medmm_pipeline = pipeline
    return blocks


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


def mcp_enabled() -> bool | None:
    """``MEDMM_MCP=1`` (on/true/yes): serve the MCP endpoint; 0/off: do not; unset: gradio's own
    ``GRADIO_MCP_SERVER`` decides. Needs the ``mcp`` package (``pip install "mcp>=1.21,<2"``)."""
    raw = os.environ.get(MCP_ENV, "").strip().lower()
    if not raw:
        return None
    on = raw in ("1", "on", "true", "yes")
    if on:
        try:
            import mcp  # noqa: F401
        except ImportError:
            raise SystemExit(f"{MCP_ENV}=1 needs the mcp package: pip install \"mcp>=1.21,<2\"") from None
    return on


MCP_TOOL_ENDPOINT = "/predict_json"


def configure_mcp(blocks: gr.Blocks, endpoint: str = MCP_TOOL_ENDPOINT, max_files: int = MAX_SCANS) -> list[str]:
    """After ``launch(mcp_server=True)``: the MCP server offers ``endpoint`` only (gradio makes every public API
    endpoint a tool; the others need a browser session's state and are no use to an agent), and its list of
    files works. Returns the tool names.

    gradio 6.31 turns each file of a ``gr.File(file_count="multiple")`` input into a string (data: URI or http(s)
    URL) in the tool schema but leaves a ``$ref`` that points nowhere (every call with a file fails validation) and
    records the list's position as ``items`` instead of the element indices (the strings would never become files).
    The wrapper below drops the dangling references and lists the indices 0..max_files-1; tests/test_api.py calls
    the tool with an image, so a gradio change that breaks this is seen."""
    mcp_server = getattr(blocks, "mcp_server_obj", None)
    tools = getattr(mcp_server, "tool_to_endpoint", None)
    original = getattr(mcp_server, "get_input_schema", None)
    if not isinstance(tools, dict) or original is None:
        log.warning("MCP: gradio internals changed; every public endpoint is a tool, lists of files may fail")
        return []
    for name in [name for name, ep in tools.items() if ep != endpoint]:
        del tools[name]

    def get_input_schema(tool_name: str, parameters: dict[str, str] | None = None):
        schema, positions = original(tool_name, parameters)
        fixed: list[list[str | int]] = []
        for pos in positions:
            if "$defs" in pos:
                continue                                   # a definition, not a place in the arguments
            if pos and pos[-1] == "items":                 # a list of files: each element is a file
                fixed += [[*pos[:-1], i] for i in range(max_files)]
                prop = schema.get("properties", {}).get(pos[0], {})
                prop.pop("$defs", None)
                prop.get("items", {}).pop("$ref", None)
            else:
                fixed.append(pos)
        return schema, fixed

    mcp_server.get_input_schema = get_input_schema
    return list(tools)


def warm_up(pipeline: LazyPipeline) -> None:
    """Load what a first analysis needs, once the page is served (``python app.py``): the pipeline, the clinical-text
    reader and the torch model for explanations. A failure is logged by type; the first request then retries."""
    try:
        from medmm.notes import read_note

        loaded = pipeline.get()
        read_note("warm-up")
        _ = loaded.model
        log.info("model loaded: %s runtime", loaded.runtime_name)
    except Exception as exc:  # noqa: BLE001 - a request reports its own error; nothing about inputs is logged
        log.error("warm-up failed: %s", type(exc).__name__)


# Spaces / `gradio app.py` pick up `demo`; building it reads the checkpoint's JSON, the weights load on first use
PIPELINE = LazyPipeline(os.environ.get("MEDMM_CHECKPOINT") or DEFAULT_CHECKPOINT)
demo = build_demo(PIPELINE)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server.install_log_filters()        # the root handler too: no pydicom record keeps its values
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes
    mcp = mcp_enabled()
    server.install_cleanup(CACHE_DIR)   # SIGTERM behaves like Ctrl-C; the run's cache folder is removed at exit
    launch = dict(server.launch_kwargs(MAX_FILE_SIZE), css=CSS, footer_links=["api"], mcp_server=mcp)
    mcp_on = bool(mcp or (mcp is None and os.environ.get("GRADIO_MCP_SERVER", "").lower() == "true"))
    if mcp_on:
        import warnings

        # gradio warns about the State inputs of /check_consistency and /export: they are no MCP tools here
        warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")
    demo.launch(**launch, prevent_thread_lock=True)   # the page answers first (building it needs no weights) ...
    # ... then the model loads behind it, so the first analysis does not wait for it either (it would wait on
    # LazyPipeline's lock if it came sooner): the cached graphs, the clinical-text reader (spaCy + medspaCy, ~3.5 s)
    # and the torch model that explanations' gradients need (medmm.pipeline)
    threading.Thread(target=warm_up, args=(PIPELINE,), name="medmm-warm-up", daemon=True).start()
    if mcp_on:
        log.info("MCP tools: %s", configure_mcp(demo))
    demo.block_thread()
