"""Hostile and odd inputs through the whole pipeline and the CLI: a clear error or a correct result, never a crash.

The corpus is built by ``tests/make_bad_inputs.py``. Every case goes through ``Pipeline.predict`` with the shipped
checkpoint (``checkpoints/default``), as a path and as bytes; a few representative ones also go through
``python -m medmm predict`` in subprocesses (exit code 2, one ``error:`` line, no traceback).
``load_scan`` itself is fuzzed with mutated bytes in ``tests/test_io.py``; here the notes text is fuzzed.
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medmm.models.checkpoint import DEFAULT_CHECKPOINT
from medmm.io import ScanError
from medmm.pipeline import MAX_SCANS, InputError, Pipeline
from tests.make_bad_inputs import NOTES, SCANS, BadInput, BadNotes, write_corpus

REPO = Path(__file__).resolve().parents[1]
_C0 = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    if not (DEFAULT_CHECKPOINT / "medmm.json").exists():
        pytest.skip(f"shipped checkpoint missing: {DEFAULT_CHECKPOINT}")
    return Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_inputs")
    write_corpus(folder)
    return folder


def _good(corpus: Path) -> Path:
    return corpus / "good.png"


def assert_clean_message(exc: BaseException, corpus: Path | None = None) -> str:
    """A user-facing message: one line, not empty, no traceback text, no temp path."""
    msg = str(exc)
    assert msg.strip(), f"{type(exc).__name__} with an empty message"
    assert "\n" not in msg and "Traceback" not in msg, msg
    if corpus is not None:
        assert str(corpus) not in msg, f"message leaks the file path: {msg}"
    return msg


def assert_valid_prediction(pred, pipeline: Pipeline, modalities: tuple[str, ...]) -> None:
    assert tuple(pred.findings) == pipeline.findings
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in pred.findings.values()), pred.findings
    assert pred.modalities == modalities
    assert set(pred.positive) <= set(pipeline.findings)
    for w in pred.warnings:
        assert isinstance(w, str) and w.strip()


# ============================================================================================ scans
@pytest.mark.parametrize("case", SCANS, ids=[c.name for c in SCANS])
def test_scan_file_through_pipeline(pipeline: Pipeline, corpus: Path, case: BadInput) -> None:
    path = case.path(corpus)
    if case.expect == "error":
        with pytest.raises((ScanError, InputError)) as info:
            pipeline.predict([path])
        assert re.search(case.match, assert_clean_message(info.value, corpus)), str(info.value)
        # a bad scan must not silently degrade to a notes-only answer
        with pytest.raises((ScanError, InputError)):
            pipeline.predict([path], "Fever and cough.")
    else:
        pred = pipeline.predict([path])
        assert_valid_prediction(pred, pipeline, ("image",))
        meta = pred.scan_metadata[0]
        described = " | ".join([meta["source_format"], *meta["notes"]])
        assert re.search(case.match, described), described


@pytest.mark.parametrize("case", SCANS, ids=[c.name for c in SCANS])
def test_scan_bytes_through_pipeline(pipeline: Pipeline, corpus: Path, case: BadInput) -> None:
    """The app may hand over bytes: same outcome, minus the extension hint."""
    data = case.path(corpus).read_bytes()
    if case.expect == "error":
        with pytest.raises((ScanError, InputError)) as info:
            pipeline.predict([data])
        assert re.search(case.match, assert_clean_message(info.value)), str(info.value)
    else:
        assert_valid_prediction(pipeline.predict([data]), pipeline, ("image",))


def test_same_content_same_answer_whatever_the_extension(pipeline: Pipeline, corpus: Path) -> None:
    """A PNG named .dcm gives exactly the answer of the same PNG named .png."""
    png = corpus / "png_named.dcm"
    renamed = corpus / "png_named_copy.png"
    renamed.write_bytes(png.read_bytes())
    a, b = pipeline.predict([png]), pipeline.predict([renamed])
    assert a.findings == b.findings


def test_request_level_errors(pipeline: Pipeline, corpus: Path, tmp_path: Path) -> None:
    for scans, notes, exc, match in [
        ([], None, InputError, "at least one scan"),
        ([], "   ", InputError, "at least one scan"),
        ([_good(corpus)] * (MAX_SCANS + 1), None, InputError, f"At most {MAX_SCANS} scans"),
        ([tmp_path / "missing.png"], None, ScanError, "file not found"),
        ([tmp_path], None, ScanError, "folder"),
        ([_good(corpus), corpus / "notes.txt"], None, ScanError, r"file 2 of 2: not an image"),
        ([12345], None, ScanError, "unsupported input type"),
    ]:
        with pytest.raises(exc) as info:
            pipeline.predict(scans, notes)
        assert re.search(match, assert_clean_message(info.value, corpus)), str(info.value)


def test_multiview_request_with_odd_but_valid_files(pipeline: Pipeline, corpus: Path) -> None:
    files = [corpus / n for n in ("good.png", "rgb.dcm", "ybr_full.dcm", "float_ok.tif", "dicom_named.png")]
    pred = pipeline.predict(files, "Cough.")
    assert_valid_prediction(pred, pipeline, ("image", "notes"))
    assert len(pred.scan_metadata) == len(files)


# ============================================================================================ notes
@pytest.mark.parametrize("case", NOTES, ids=[n.name for n in NOTES])
def test_notes_alone(pipeline: Pipeline, case: BadNotes) -> None:
    if case.alone == "error":
        with pytest.raises(InputError) as info:
            pipeline.predict([], case.text)
        assert_clean_message(info.value)
        return
    pred = pipeline.predict([], case.text)
    assert_valid_prediction(pred, pipeline, ("notes",))
    emb = pipeline.notes_embedding(pipeline.prepare([], case.text))
    assert emb is not None and np.isfinite(emb).all()
    if case.warning:
        assert any(re.search(case.warning, w) for w in pred.warnings), pred.warnings


@pytest.mark.parametrize("case", NOTES, ids=[n.name for n in NOTES])
def test_notes_beside_a_scan_with_report(pipeline: Pipeline, corpus: Path, case: BadNotes) -> None:
    """The full service path (load, predict, draft report) with odd notes and a valid scan."""
    from medmm.service import run_request

    result = run_request(pipeline, [_good(corpus)], case.text)
    expected = ("image",) if case.alone == "error" else ("image", "notes")
    assert_valid_prediction(result.prediction, pipeline, expected)
    payload = json.dumps(result.to_json())  # what the CLI prints must serialise
    assert payload
    if result.report is not None:
        text = result.report.to_text()
        assert not _C0.search(text), f"control characters reach the report: {text!r}"
        assert len(text) < 50_000  # 1 MB of notes must not be echoed back whole


def test_notes_embedding_is_the_sentence_embedding_the_report_bank_uses(pipeline: Pipeline, caplog) -> None:
    """The drafter ranks sentences by cosine to the notes' sentence embedding: it must get that embedding (the
    encoder's width), not the fusion's joined notes features (bag of words and notes expert appended), which made
    it fall back to frequency ranking on every request."""
    import logging

    from medmm.report import draft_report, load_bank

    from dataclasses import replace

    notes = "Fever and productive cough for three days, crackles at the right base."
    pred = replace(pipeline.predict([], notes), notes_embedding=pipeline.notes_embedding(pipeline.prepare([], notes)))
    bank = load_bank()
    assert pred.notes_embedding.shape == (pipeline.model.text_encoder.dim,) == (bank.embeddings.shape[1],)
    with caplog.at_level(logging.WARNING, logger="medmm.report"):
        draft_report(pred, "Fever and productive cough for three days, crackles at the right base.")
    assert "ranking by frequency" not in caplog.text


def test_notes_with_lone_surrogate(pipeline: Pipeline) -> None:
    """Lone surrogates (valid in JSON) are dropped like control characters, not passed to the tokenizer."""
    pred = pipeline.predict([], "fever \ud800 cough")
    assert_valid_prediction(pred, pipeline, ("notes",))
    assert pipeline.notes_embedding(pipeline.prepare([], "fever \ud800 cough")) is not None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.text(max_size=400))
def test_fuzz_notes_prepare_and_encode(pipeline: Pipeline, notes: str) -> None:
    """Any text (surrogates included) is refused with InputError or encoded to finite values."""
    try:
        inputs = pipeline.prepare([], notes)
    except InputError as e:
        # nothing but controls (Cc), format characters, surrogates, private-use or unassigned code points and spaces
        assert all(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") or ch.isspace() for ch in notes), notes
        assert_clean_message(e)
        return
    assert inputs.input_ids is None                      # tokenized only when the notes' embedding is needed
    ids, _ = pipeline.tokens(inputs)
    assert ids.shape[1] >= 2 and inputs.input_ids is ids
    feat = pipeline.text_features(inputs)
    assert feat is not None and bool(feat.isfinite().all())


# ============================================================================================ concurrency
@pytest.mark.slow
def test_concurrent_requests_do_not_mix(pipeline: Pipeline, corpus: Path) -> None:
    """Threads sharing one pipeline (as the Gradio app does) get the same answers as sequential calls."""
    requests = [([corpus / "good.png"], "fever one"), ([corpus / "rgb.dcm"], "cough two"),
                ([corpus / "ybr_full.dcm"], None), ([], "dyspnoea three"), ([corpus / "float_ok.tif"], "four")]
    reference = [pipeline.predict(s, n).findings for s, n in requests]
    results: dict[tuple[int, int], dict[str, float]] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for k in range(len(requests)):
                i = (t + k) % len(requests)
                results[(t, i)] = pipeline.predict(*requests[i]).findings
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors
    assert len(results) == 4 * len(requests)
    for (_, i), got in results.items():
        for f, p in got.items():
            assert abs(p - reference[i][f]) <= 1e-5, (i, f, p, reference[i][f])


# ============================================================================================ CLI
def _cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "medmm", "predict", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_cli_bad_inputs_exit_2_with_one_error_line(corpus: Path, tmp_path: Path) -> None:
    """Representative bad files (text, truncated DICOM, decompression bomb) and one odd-but-valid request, run
    in parallel subprocesses (each loads the model)."""
    notes_file = tmp_path / "one_megabyte.txt"
    notes_file.write_text(next(n.text for n in NOTES if n.name == "one_megabyte"), encoding="utf-8")
    bad = {"notes.txt": r"not an image: the file is text", "truncated.dcm": r"corrupt or truncated DICOM",
           "bomb_100k.png": r"too large"}
    procs = {name: _cli(str(corpus / name), "--json") for name in bad}
    ok_proc = _cli(str(corpus / "dicom_named.png"), "--notes-file", str(notes_file), "--json")
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 2, (name, proc.returncode, err[-2000:])
        assert "Traceback" not in err, err
        assert out == "", out
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        assert re.search(bad[name], errors[0]), errors[0]
        assert str(corpus) not in errors[0]
        # anything else on stderr is a known warning (untrained checkpoint) or the weight-loading progress bar
        others = [line for line in err.splitlines() if line.strip() and not line.startswith("error:")]
        assert all(re.search(r"warning|UNTRAINED|Loading weights", line, re.I) for line in others), others
    out, err = ok_proc.communicate(timeout=600)
    assert ok_proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    payload = json.loads(out)
    assert set(payload["findings"]) and payload["modalities"] == ["image", "notes"]
    assert any("cut to that length" in w for w in payload["warnings"])
    assert len(payload["report"]) < 50_000


def test_one_rule_for_control_characters_everywhere(pipeline: Pipeline) -> None:
    """medmm.text.strip_controls is what both the notes and the de-identifier read: a control character keeps the
    words apart, a zero-width or bidi character cannot hide a word from the reader or a name from the scrubber."""
    from medmm.pipeline import clean_notes
    from medmm.report.deid import clean_indication, strip_controls
    from medmm.text import strip_controls as the_rule

    assert strip_controls is the_rule
    assert clean_notes("fe\u200bver\x00cough\u202e")[0] == "fever cough"
    assert clean_indication("Patient Jo\u200dhn Smith, fe\u200bver.").startswith("Patient [NAME]")
    evidence = pipeline.predict([], "3-year-old with fe\u200bver").notes_evidence
    assert any(e.concept == "fever" for e in evidence.items)
