"""The Gradio app's handlers called directly (no server, no browser), and the pure formatting in medmm.serve.presenters.

One real analysis (example radiograph + notes, Grad-CAM) is shared by the module; a second one runs the example
DICOM without notes. Everything asserts values a clinician would see: all findings with probabilities, the overlay
pixels, the report's sections, the energy figures, clear errors, no identifiers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

gr = pytest.importorskip("gradio")
import app  # noqa: E402  (app.py at the repository root, on sys.path through pytest's rootdir; the model loads lazily)
from medmm.serve import presenters as fmt  # noqa: E402
from medmm.prediction import Prediction  # noqa: E402

EXAMPLES = ROOT / "assets" / "examples"
IMAGE = EXAMPLES / "02_child_bacterial_pneumonia.jpeg"
NOTES = (EXAMPLES / "02_child_bacterial_pneumonia.txt").read_text(encoding="utf-8")
DICOM = EXAMPLES / "04_adult_dicom_dx.dcm"
FINDINGS = tuple(app.PIPELINE.findings)


def _no_progress(*args, **kwargs) -> None:
    return None


@pytest.fixture(scope="module")
def analyzed() -> dict:
    return app.analyze(app.PIPELINE, [str(IMAGE)], NOTES, fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)


def _error_message(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.message


# ------------------------------------------------------------------------------------------------ analyze
def test_analyze_example_gives_every_finding_with_probability_and_operating_point(analyzed: dict) -> None:
    label = analyzed["findings_label"]
    pred = analyzed["state"].prediction
    # the headline chart shows what the model assesses on this film; COVID-19 needs a test result in the notes
    assert tuple(label) == tuple(f for f in FINDINGS if pred.call(f).in_scope) and "COVID-19" not in label
    assert all(0.0 <= p <= 1.0 for p in label.values())
    table = analyzed["findings_table"].data            # pandas Styler -> its DataFrame
    assert list(table.columns) == fmt.FINDINGS_HEADERS
    assert list(table["Finding"]) == list(FINDINGS)
    session = analyzed["state"]
    pred = session.prediction
    for _, row in table.iterrows():
        f = row["Finding"]
        assert row["Probability"] == pytest.approx(pred.findings[f], abs=5e-4)
        assert row["Threshold"] == pytest.approx(pred.thresholds[f], abs=5e-4)
        assert row["Positive"].startswith("YES") == (f in pred.positive)


def test_analyze_example_draws_overlay_tokens_and_modalities(analyzed: dict) -> None:
    from PIL import Image

    path = Path(analyzed["overlay_image"])                  # a PNG in the request's own cache folder
    assert path.parent.parent == Path(app.get_upload_folder()) and path.suffix == ".png"
    overlay = np.asarray(Image.open(path))
    assert overlay.ndim == 3 and overlay.shape[2] == 3
    assert overlay.dtype == np.uint8 and overlay.std() > 5        # an actual picture, not a blank canvas
    tokens = analyzed["tokens_text"]
    scored = [(t, s) for t, s in tokens if s is not None]
    assert scored and all(-1.0 <= s <= 1.0 for _, s in scored)
    assert "".join(t for t, _ in tokens).split() == NOTES.split()  # the notes, in order, nothing invented
    shares = analyzed["modality_label"]
    finding = next(iter(shares)).split("(for ")[1].rstrip(")")                 # the shares say which finding
    assert set(shares) == {f"image (for {finding})", f"notes (for {finding})"}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert "Grad-CAM" in analyzed["explanation_md"]


def test_analyze_example_drafts_report_and_energy(analyzed: dict) -> None:
    report = analyzed["report_box"]
    assert report.index("INDICATION:") < report.index("FINDINGS:") < report.index("IMPRESSION:")
    assert "not a diagnosis" in report
    energy = analyzed["energy_md"]
    assert " J**" in energy and "Wh" in energy and "g CO2e" in energy and "Method:" in energy
    for stage in ("load", "inference", "explanation", "report"):
        assert f"| {stage} |" in energy
    assert app.PIPELINE.meta.trained                                 # the shipped checkpoint is a trained one
    assert "UNTRAINED" not in analyzed["warnings_md"]


def test_analyze_example_writes_downloads_in_gradio_cache(analyzed: dict) -> None:
    from gradio.utils import get_upload_folder
    from pydicom import dcmread

    text, js, sr = (Path(analyzed[c]) for c in ("download_text", "download_json", "download_sr"))
    assert text.parent == js.parent == sr.parent
    assert text.parent.parent == Path(get_upload_folder())    # per-request folder that delete_cache cleans
    assert text.read_text(encoding="utf-8") == analyzed["report_box"]
    payload = json.loads(js.read_text(encoding="utf-8"))
    assert set(payload["findings"]) == set(FINDINGS) and payload["report_edited"] is False
    assert "not a diagnosis" in payload["disclaimer"]
    ds = dcmread(sr)
    assert ds.Modality == "SR" and ds.VerificationFlag == "UNVERIFIED" and str(ds.PatientName) == ""


def test_analyze_dicom_without_extension_shows_safe_metadata_and_viewer(tmp_path: Path) -> None:
    no_ext = tmp_path / "IMG0001"                         # DICOM files often have no extension
    shutil.copyfile(DICOM, no_ext)
    out = app.analyze(app.PIPELINE, [str(no_ext)], "", fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)
    meta = dict((row[0], row[1]) for row in out["metadata_df"]["data"])
    assert meta["Format"] == "dicom" and meta["Modality"] == "DX" and meta["Size (rows x columns)"] == "1024 x 1024"
    shown = json.dumps({k: str(v) for k, v in out.items() if k != "state"})
    assert "Covid0000" not in shown                       # the fixture's PatientName/PatientID never reach the UI
    from PIL import Image

    viewer = np.asarray(Image.open(out["viewer_image"]))   # the frame, losslessly
    assert viewer.shape == (1024, 1024) and viewer.dtype == np.uint8
    assert out["tokens_text"] is None                   # no notes, no token highlights
    assert [k.split(" (for ")[0] for k in out["modality_label"]] == ["image"]


# ------------------------------------------------------------------------------------------------ errors
def test_text_file_renamed_png_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "chest.png"
    fake.write_text("this is a text file, not an X-ray\n")
    with pytest.raises(gr.Error) as excinfo:
        app.analyze(app.PIPELINE, [str(fake)], "cough", fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)
    message = _error_message(excinfo)
    assert "not an image" in message and "text" in message
    assert "chest.png" not in message                     # file names may carry identifiers


@pytest.mark.parametrize("files,notes", [(None, ""), ([], "   \n\t "), (None, None)])
def test_empty_input_is_a_clear_error(files, notes) -> None:
    with pytest.raises(gr.Error) as excinfo:
        app.analyze(app.PIPELINE, files, notes, fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)
    assert "at least one scan or some clinical notes" in _error_message(excinfo)


def test_unexpected_failure_shows_generic_message_and_logs_type_only(monkeypatch, caplog) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("SECRET-PATIENT-DETAIL")

    monkeypatch.setattr(app, "run_request", boom)
    with caplog.at_level(logging.INFO), pytest.raises(gr.Error) as excinfo:
        app.analyze(app.PIPELINE, None, "SECRET-NOTES", fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)
    assert _error_message(excinfo) == app.GENERIC_ERROR
    assert "RuntimeError" in caplog.text
    assert "SECRET" not in caplog.text


# ------------------------------------------------------------------------------------------------ follow-up actions
def test_consistency_check_flags_edited_report(analyzed: dict) -> None:
    assert "No contradictions" in app.check_report(analyzed["report_box"], analyzed["state"])  # the draft agrees
    # the film alone calls Pneumonia
    image_only = app.analyze(app.PIPELINE, [str(IMAGE)], "", fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)
    session = image_only["state"]
    assert "No contradictions" in app.check_report(image_only["report_box"], session)
    pred = session.prediction
    negated = next(f for f in pred.positive if f != "No Finding")
    edited = f"FINDINGS: The lungs are clear.\n\nIMPRESSION: No {negated.lower()}."
    result = app.check_report(edited, session)
    assert "contradiction" in result and negated in result
    with pytest.raises(gr.Error):
        app.check_report(edited, None)
    with pytest.raises(gr.Error):
        app.check_report("  ", session)


def test_export_uses_edited_text(analyzed: dict) -> None:
    from pydicom import dcmread

    session = analyzed["state"]
    edited = analyzed["report_box"].replace("FINDINGS:", "FINDINGS: Clinician-edited sentence.", 1)
    text, js, sr = app.export(edited, session)
    assert Path(text).read_text(encoding="utf-8") == edited
    assert json.loads(Path(js).read_text(encoding="utf-8"))["report_edited"] is True
    sr_text = " ".join(str(item.TextValue) for item in dcmread(sr).ContentSequence)
    assert "Clinician-edited sentence." in sr_text
    assert app.export(edited, None) == (None, None, None)


def test_export_of_the_unedited_draft_hands_back_the_analysis_downloads(analyzed: dict) -> None:
    """In a browser every analysis is followed by the report box's change event (the draft appearing): it gets the
    files the analysis wrote for that very text, not a second copy; an edit, or files gone, writes them anew."""
    session = analyzed["state"]
    shown = (analyzed["download_text"], analyzed["download_json"], analyzed["download_sr"])
    assert app.export(analyzed["report_box"], session) == shown
    edited = analyzed["report_box"] + "\nClinician addendum."
    again = app.export(edited, session)
    assert again[0] != shown[0] and Path(again[0]).read_text(encoding="utf-8") == edited
    assert Path(shown[0]).read_text(encoding="utf-8") == analyzed["report_box"]     # the draft's file kept as it was
    gone = dataclasses.replace(session, exports={session.draft_text: (str(Path(shown[0]).parent / "absent.txt"),
                                                                      *shown[1:])})
    rewritten = app.export(analyzed["report_box"], gone)
    assert rewritten[0] != shown[0] and Path(rewritten[0]).read_text(encoding="utf-8") == analyzed["report_box"]


def test_follow_ups_open_the_result_only_with_its_key_and_user(analyzed: dict) -> None:
    session, key = analyzed["state"], analyzed["session_key"]
    assert key == session.key and len(key) >= 32
    assert app.owned(session, key, None) is session
    assert app.owned(session, "", None) is None and app.owned(session, None, None) is None
    assert app.owned(session, key[:-1] + ("A" if key[-1] != "A" else "B"), None) is None
    assert app.owned(None, key, None) is None

    class Signed:  # gr.Request of a signed-in user
        def __init__(self, username):
            self.username = username

    mine = fmt.SessionResult(session.prediction, session.report, session.payload, session.stacks, owner="alice")
    assert app.owned(mine, mine.key, Signed("alice")) is mine
    assert app.owned(mine, mine.key, Signed("bob")) is None and app.owned(mine, mine.key, None) is None
    assert fmt.SessionResult(None, None, {}, ()).key != fmt.SessionResult(None, None, {}, ()).key  # per analysis


def test_viewer_slices_through_a_series() -> None:
    volume = np.stack([np.full((4, 5), v, np.uint8) for v in (10, 20, 30)])   # [D, H, W]
    single = np.zeros((1, 6, 6), np.uint8)
    session = fmt.SessionResult(prediction=None, report=None, payload={}, stacks=(single, volume))
    image, slider = app.select_scan(2, session)
    assert image[0, 0] == 20 and slider.maximum == 3 and slider.visible
    assert app.show_slice(2, 3, session)[0, 0] == 30
    assert app.show_slice(2, 99, session)[0, 0] == 30                        # clamped
    assert app.show_slice(1, 1, session).shape == (6, 6)
    assert app.show_slice(1, 1, None) is None


# ------------------------------------------------------------------------------------------------ presenters (pure)
def _prediction(**probs: float) -> Prediction:
    findings = {f: probs.get(f.replace(" ", "_").replace("-", "_"), 0.1) for f in FINDINGS}
    thresholds = {f: 0.5 for f in FINDINGS}
    positive = tuple(f for f in FINDINGS if findings[f] >= thresholds[f])
    return Prediction(findings=findings, thresholds=thresholds, positive=positive, modalities=("image",))


def test_findings_rows_flag_positive_with_band() -> None:
    pred = _prediction(Pneumonia=0.9, COVID_19=0.55)
    rows = {r[0]: r for r in fmt.findings_rows(pred)}
    assert rows["Pneumonia"][1:] == [0.9, 0.5, "YES (likely)"]
    assert rows["COVID-19"][3] == "YES (possible)"
    assert rows["No Finding"][3] == "no (unlikely)"
    style_block = fmt.findings_table(pred).to_html().split("</style>")[0]
    assert fmt.POSITIVE_ROW_STYLE.split(";")[0] in style_block
    highlighted = {int(r) for r in re.findall(r"_row(\d+)_col\d+", style_block)}
    assert highlighted == {FINDINGS.index("Pneumonia"), FINDINGS.index("COVID-19")}   # positive rows only
    assert "**Pneumonia**" in fmt.positive_summary(pred)


def test_energy_markdown_lists_totals_method_and_stages() -> None:
    energy = {"joules": 12.5, "wh": 12.5 / 3600, "gco2e": 12.5 * 475 / 3.6e6, "method": "rapl",
              "uncertainty": "±10%", "grid_intensity_g_per_kwh": 475.0,
              "stages": {"inference": {"joules": 10.0, "duration_s": 0.5}, "report": {"joules": 2.5, "duration_s": 0.1}}}
    text = fmt.energy_markdown(energy, latency_s=0.61)
    assert "**12.5 J** = 0.00347 Wh" in text and "0.00165 g CO2e" in text and "`rapl`" in text
    assert "| inference | 10 | 0.50 |" in text and "latency 0.61 s" in text


def test_the_first_analysis_says_the_model_load_is_in_its_energy() -> None:
    """A fresh LazyPipeline (as ``python app.py`` has while its warm-up runs): the first analysis's energy panel says
    that loading the model is counted in it; the next one, with everything loaded, does not."""
    from medmm.serve.panels.energy import COLD_START

    fresh = app.LazyPipeline(app.DEFAULT_CHECKPOINT)
    assert app._warm(fresh) is False
    first = app.analyze(fresh, [str(IMAGE)], NOTES, fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)
    assert COLD_START in first["energy_md"] and app._warm(fresh) is True
    second = app.analyze(fresh, [str(IMAGE)], NOTES, fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)
    assert COLD_START not in second["energy_md"] and " J**" in second["energy_md"]
    assert COLD_START not in fmt.energy_markdown({"joules": 1.0, "wh": 1 / 3600, "gco2e": 0.0, "method": "x"})


def test_metadata_table_shows_only_whitelisted_fields() -> None:
    meta = {"source_format": "dicom", "modality": "CR", "view": "PA", "rows": 10, "columns": 12, "frames": 1,
            "pixel_spacing_mm": [0.139, 0.139], "bits_stored": 12, "inverted": True, "notes": [],
            "patient_name": "SECRET^NAME", "study_date": "20200101"}
    table = fmt.metadata_table([meta])
    flat = json.dumps(table)
    assert table["headers"] == ["Field", "Scan 1"] and "SECRET" not in flat and "20200101" not in flat
    values = dict(table["data"])
    assert values["Pixel spacing (mm)"] == "0.139 x 0.139" and values["Inverted for display (MONOCHROME1)"] == "yes"
    assert fmt.metadata_table([])["data"] == [["Scans", "none (notes only)"]]


def test_warnings_and_consistency_markdown() -> None:
    assert fmt.warnings_markdown([]) == "No warnings for this request."
    assert "- OOD" in fmt.warnings_markdown(["OOD", ""])
    assert "No contradictions" in fmt.consistency_markdown([])
    c = SimpleNamespace(explanation="The report rules out Pneumonia.", sentence="No\n pneumonia.")
    assert '- The report rules out Pneumonia. Sentence: "No pneumonia."' in fmt.consistency_markdown([c])


def test_viewer_stack_and_explain_request() -> None:
    scan = SimpleNamespace(pixels=np.array([[0.0, 0.5], [1.0, 2.0]], np.float32), volume_pixels=None)
    assert fmt.viewer_stack(scan).tolist() == [[[0, 128], [255, 255]]]
    ct = SimpleNamespace(pixels=np.zeros((2, 2)), volume_pixels=np.ones((3, 2, 2), np.float32))
    assert fmt.viewer_stack(ct).shape == (3, 2, 2)
    assert fmt.explain_request(fmt.MOST_PROBABLE, "ig") == {"finding": None, "method": "ig"}
    assert fmt.explain_request("COVID-19", "occlusion")["finding"] == "COVID-19"


def test_example_rows_pair_images_with_notes() -> None:
    rows, labels = fmt.example_rows(EXAMPLES)
    assert len(rows) >= 3 and len(rows) == len(labels)
    by_label = dict(zip(labels, rows))
    assert by_label["child bacterial pneumonia"][0] == [str(IMAGE)]
    assert by_label["child bacterial pneumonia"][1] == NOTES.strip()
    assert by_label["notes only"][0] is None and by_label["notes only"][1]
    assert any(r[0] and r[0][0].endswith(".dcm") for r in rows)
    assert sum(p.stat().st_size for p in EXAMPLES.iterdir()) < 3 * 1024 * 1024


def test_edited_report_maps_sections_and_keeps_disclaimer() -> None:
    from medmm.report import Report

    draft = Report("draft indication", "draft findings", "draft impression", warnings=("OOD image.",))
    assert fmt.edited_report(draft, draft.to_text()) is draft
    edited = fmt.edited_report(draft, "INDICATION: cough\n\nFINDINGS: Clear lungs.\n\nCOMPARISON: none.\n\n"
                                      "IMPRESSION: Normal.\n\nWARNINGS:\n- OOD image.\n\nNOTE: " + draft.disclaimer
                                      + " my own note")
    assert (edited.indication, edited.findings, edited.impression) == ("cough", "Clear lungs.", "Normal.")
    assert edited.other_sections == (("comparison", "none."), ("note", "my own note"))
    assert edited.disclaimer == draft.disclaimer and edited.warnings == draft.warnings
    free = fmt.edited_report(draft, "Free text without headers.")
    assert (free.indication, free.findings, free.impression) == ("", "Free text without headers.", "")


# ------------------------------------------------------------------------------------------------ stale results
def test_a_new_request_clears_every_output_and_a_failure_leaves_them_empty(analyzed: dict, tmp_path: Path) -> None:
    cleared = app.clear_outputs()
    assert set(cleared) >= set(analyzed)                        # every output of an analysis is reset
    for comp in ("findings_label", "overlay_image", "tokens_text", "modality_label", "download_text",
                 "download_json", "download_sr", "viewer_image", "state", "pending"):
        assert cleared[comp] is None, comp
    for comp in ("positive_md", "warnings_md", "explanation_md", "report_box", "consistency_md",
                 "energy_md"):
        assert cleared[comp] == "", comp
    assert cleared["findings_table"].empty and "cleared" in cleared["status_md"]
    assert not cleared["scan_slider"].visible and not cleared["slice_slider"].visible

    fake = tmp_path / "chest.png"
    fake.write_text("this is a text file, not an X-ray\n")
    pending, status = app.analyze_ui(app.PIPELINE, [str(fake)], "next patient", fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)
    assert pending is None and "request failed" in status and "not an image" in status
    assert all(isinstance(v, type(gr.skip())) for v in app.show_results(None)[:-1])   # panels stay cleared

    ok, status = app.analyze_ui(app.PIPELINE, [str(IMAGE)], NOTES, fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)
    shown = dict(zip(app.OUTPUTS, app.show_results(ok)))
    assert "complete" in status and shown["report_box"].startswith("INDICATION:")
    assert Path(shown["download_text"]).read_text(encoding="utf-8") == shown["report_box"]


def test_changing_any_input_clears_every_output_until_analyze_runs_again() -> None:
    """Issue: a new film and note without pressing Analyze left "Analysis complete" and the previous patient's
    calls, draft and downloads on screen. Each analysis input's change clears what an Analyze clears, cheaply (not
    queued, off the API page), cancels an analysis or export still running for the old inputs, and says so."""
    demo, comps = app.demo, app.demo.medmm_components
    cleared = [*app.OUTPUTS, "status_md", "pending"]
    by_id = {comp._id: name for name, comp in comps.items()}
    deps = list(demo.fns.values())
    for name in app.ANALYSIS_INPUTS:
        target = (comps[name]._id, "change")
        [dep] = [d for d in deps if target in d.targets and d.fn is not None]
        assert [by_id[o._id] for o in dep.outputs] == cleared, name
        assert [by_id[i._id] for i in dep.inputs] == ["status_md"], name
        assert dep.queue is False and dep.api_visibility == "private", name
        [cancel] = [d for d in deps if target in d.targets and d.fn is None]
        assert {demo.fns[i].name for i in cancel.cancels} == {"run_ui", "show_results", "export_shown"}, name
        # what it shows: the same empty panels as before a request, and why
        for status, shown in ((fmt.DONE_STATUS, app.INPUTS_CHANGED_STATUS),
                              (fmt.failed_status("not an image"), app.INPUTS_CHANGED_STATUS)):
            values = dict(zip(cleared, dep.fn(status)))
            assert values["status_md"] == shown
            reference = app.clear_outputs()
            for comp in ("findings_label", "report_box", "download_text", "download_json", "download_sr", "state",
                         "session_key", "overlay_image", "tokens_text", "energy_md", "pending"):
                assert values[comp] == reference[comp], (name, comp)
            assert values["findings_table"].empty
        idle = dict(zip(cleared, dep.fn(fmt.IDLE_STATUS)))          # nothing analysed yet: the idle line stays
        assert isinstance(idle["status_md"], type(gr.skip()))
    assert "Inputs changed" in app.INPUTS_CHANGED_STATUS and "Analyze" in app.INPUTS_CHANGED_STATUS
    # the clinician's draft is no analysis input: editing it rewrites the downloads and clears nothing
    report_deps = [d for d in deps if (comps["report_box"]._id, "change") in d.targets]
    assert [d.name for d in report_deps] == ["export_shown"]


def test_progress_reports_every_stage_in_order() -> None:
    seen: list[tuple[float, str]] = []
    app.analyze(app.PIPELINE, [str(IMAGE)], NOTES, fmt.MOST_PROBABLE, "gradcam",
                progress=lambda frac, desc=None, **kw: seen.append((frac, desc)))
    descs = [d for _, d in seen]
    assert [d.split(" (")[0] for d in descs] == ["Loading scans and notes", "Running the model",
                                                 "Computing and checking the explanation", "Drafting the report",
                                                 "Drawing the results and exports"]
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs) and fracs[0] == 0 and fracs[-1] < 1


def test_overlay_caption_reports_its_own_check(analyzed: dict) -> None:
    from medmm.explain.saliency_check import verdict

    session_payload = analyzed["state"].payload
    text = analyzed["explanation_md"]
    assert "not proof of where the model looked" in text
    assert ("better than random" in text) or ("NO BETTER THAN RANDOM" in text)
    exp = SimpleNamespace(method="gradcam")
    bad = {"compared_with": "ig", "deletion_gain": -0.02, "insertion_gain": 0.0, "agreement_spearman": 0.05,
           "deletion_auc": 0.738, "deletion_auc_random": 0.755}
    v = verdict(bad)
    assert v["faithful"] is False and v["agree"] is False and v["located"] is False
    caption = fmt.overlay_caption(exp, bad)
    assert "NO BETTER THAN RANDOM" in caption and "METHODS DISAGREE" in caption
    good = dict(bad, deletion_gain=0.2, agreement_spearman=0.6)
    assert "NO BETTER" not in fmt.overlay_caption(exp, good) and "agrees" in fmt.overlay_caption(exp, good)
    assert "not checked" in fmt.overlay_caption(exp, None)
    assert session_payload["warnings"] is not None


def test_scans_of_different_patients_get_a_warning_without_identifiers(tmp_path: Path) -> None:
    from tests.helpers import require_shared

    other = require_shared("dicom", "txv_siim.dcm")
    out = app.analyze(app.PIPELINE, [str(DICOM), str(other)], "", fmt.MOST_PROBABLE, "gradcam", progress=_no_progress)
    assert "different patients" in out["warnings_md"]
    session = out["state"]
    assert any("different patients" in w for w in session.payload["warnings"])
    assert "different patients" in session.draft_text                  # the report's WARNINGS section too
    shown = json.dumps({str(i): str(v) for i, v in enumerate(out.values())}) + json.dumps(session.payload, default=str)
    assert "Covid0000" not in shown and "patient_key" not in shown
    same = app.analyze(app.PIPELINE, [str(other), str(require_shared("dicom", "txv_fake_monohr1.dcm"))], "", fmt.MOST_PROBABLE,
                       "gradcam", progress=_no_progress)
    assert "different patients" not in same["warnings_md"]


# ------------------------------------------------------------------------------------------------ data API
def test_module_demo_is_built_without_loading_the_model_and_lists_the_api() -> None:
    import subprocess
    import sys

    code = ("import sys, app; import gradio as gr; "
            "assert isinstance(app.demo, gr.Blocks); "
            "print(app.PIPELINE.loaded, 'medmm.models.model' in sys.modules, sorted(app.demo.get_api_info()['named_endpoints']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    loaded, model_imported, endpoints = out.stdout.strip().splitlines()[-1].split(" ", 2)
    assert (loaded, model_imported) == ("False", "False")       # import reads the checkpoint's JSON only
    # on the API page: the structured endpoint, the UI-shaped one and the session follow-ups; never the UI chain
    # (clear / analyse / show) nor the viewer sliders
    assert endpoints == str(["/check_consistency", "/export", "/predict", "/predict_json"])


def test_build_demo_takes_a_loaded_pipeline_too() -> None:
    pipeline = app.PIPELINE.get()
    blocks = app.build_demo(pipeline)
    assert isinstance(blocks, gr.Blocks) and blocks.medmm_pipeline is pipeline
    assert set(app.OUTPUTS) <= set(blocks.medmm_components)
    info = blocks.get_api_info()["named_endpoints"]["/predict_json"]
    assert [p["parameter_name"] for p in info["parameters"]] == ["files", "notes", "report"]
    assert [r["component"] for r in info["returns"]] == ["Json"]
    from medmm.explain.methods import DEFAULT_METHOD, METHOD_NAMES, METHODS

    radio = blocks.medmm_components["method_in"]                    # the registry's methods, in its order
    assert [tuple(c) for c in radio.choices] == [(METHOD_NAMES[m], m) for m in METHODS]
    assert radio.value == DEFAULT_METHOD


def test_json_result_is_the_cli_object_and_report_is_optional() -> None:
    from medmm.service import run_request

    out = app.json_result(app.PIPELINE, [str(IMAGE)], NOTES)
    ref = run_request(app.PIPELINE.get(), [str(IMAGE)], NOTES).to_json()     # what `medmm predict --json` prints
    assert list(out) == list(ref)
    assert out["findings"] == pytest.approx(ref["findings"], abs=1e-6) and out["positive"] == ref["positive"]
    assert out["report"] == ref["report"] and "IMPRESSION:" in out["report"]
    # stage times come from the energy meter's stages (one clock for both)
    assert list(ref["stage_latency_s"]) == ["load", "inference", "report"]
    for name, seconds in ref["stage_latency_s"].items():
        assert seconds == pytest.approx(ref["energy"]["stages"][name]["duration_s"], abs=1e-4)
    json.dumps(out)                                                            # plain JSON, no numpy values
    bare = app.json_result(app.PIPELINE, [], "fever and cough for three days", report=False)
    assert bare["report"] == "" and bare["modalities"] == ["notes"] and "report" not in bare["stage_latency_s"]
    with pytest.raises(gr.Error) as excinfo:
        app.json_result(app.PIPELINE, [], "cough", report="yes")
    assert "true or false" in _error_message(excinfo)
    with pytest.raises(gr.Error) as excinfo:
        app.json_result(app.PIPELINE, None, "  ")
    assert "at least one scan or some clinical notes" in _error_message(excinfo)


# -------------------------------------------------------------------------------------------- user text shown as text
HOSTILE_TEXT = ('<img src=x onerror=alert(1)> **bold** [link](http://evil.example) _i_ `code` # h | t | & '
                'www.evil.example $x$ ~~s~~ <script>alert(1)</script>')


def test_plain_text_renders_user_text_literally() -> None:
    """Every Markdown/HTML construct in user-derived text renders as the characters typed (CommonMark renderer)."""
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark").enable("table").enable("strikethrough")
    rendered = md.render(app.plain_text(HOSTILE_TEXT))
    for tag in ("<img", "<a ", "<strong", "<script", "<em", "<code", "<h1", "<s>", "<table"):
        assert tag not in rendered, tag
    import html as html_mod

    assert html_mod.unescape(re.sub(r"</?p>", "", rendered)).strip() == HOSTILE_TEXT


def test_consistency_panel_quotes_the_report_as_plain_text(analyzed: dict) -> None:
    """The consistency panel quotes report sentences (clinician or API text): markup in them is escaped."""
    session = analyzed["state"]
    negated = next(f for f in session.prediction.positive if f != "No Finding")
    edited = f"IMPRESSION: No {negated.lower()} <img src=x onerror=alert(1)> **seen** [here](http://evil.example)."
    shown = app.check_report(edited, session)
    assert "contradiction" in shown
    assert not re.search(r"(?<!\\)(<img|\*\*seen|\]\(http)", shown)         # nothing left unescaped
    assert r"\<img src\=x onerror\=alert\(1\)\>" in shown


def test_api_inputs_are_strict_about_types() -> None:
    """The endpoint functions refuse what gradio's Textbox would coerce to text (a dict, a number)."""
    for notes in ({"name": "x"}, 12, ["a"]):
        with pytest.raises(gr.Error, match="must be text"):
            app.json_result(app.PIPELINE, [], notes)
    with pytest.raises(gr.Error, match="true or false"):
        app.json_result(app.PIPELINE, [], "cough", report="yes")
    with pytest.raises(gr.Error, match="Text longer than 20,000 characters was sent as the report"):
        app.check_report("x" * 20_001, object())
