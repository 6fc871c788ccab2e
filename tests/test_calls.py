"""From probabilities to calls and words (medmm.calls) and the scope table: one rule, every output in step."""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medmm.calls import (LIKELY_AT, R_COMPETING, R_INDETERMINATE, R_PARENT, R_SCOPE, R_TEST, SUBTYPE_MARGIN,
                         UNLIKELY_BELOW, ScopeRule, decide, load_scope, statement)
from medmm.labels import FINDINGS
from medmm.models.checkpoint import DEFAULT_CHECKPOINT
from medmm.report.labeler import label_text
from tests.helpers import ROOT, require_shared

ORDER = {"unlikely": 0, "uncertain": 1, "possible": 2, "likely": 3}
EXAMPLES = ROOT / "assets" / "examples"
probability = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(st.lists(probability, min_size=5, max_size=5), st.lists(st.floats(0.01, 0.99), min_size=5, max_size=5),
       st.sampled_from([None, "child", "adult", "no image"]), st.booleans())
def test_every_call_says_its_band_and_why(probs, thresholds, population, tested):
    """The words never contradict the call, every value at or above its threshold that is not called says why, and
    only the 'unlikely' band may say there is no evidence."""
    scope = load_scope(DEFAULT_CHECKPOINT)
    calls, _ = decide(dict(zip(FINDINGS, probs)), dict(zip(FINDINGS, thresholds)), scope, population,
                      {"COVID-19", "Viral pneumonia"} if tested else ())
    assert [c.finding for c in calls] == list(FINDINGS)
    by = {c.finding: c for c in calls}
    for c in calls:
        if c.called:
            assert c.band in ("possible", "likely") and c.probability >= c.threshold and c.in_scope
            assert (c.band == "likely") == (c.probability >= LIKELY_AT)
            assert c.label.startswith("YES")
        elif not c.in_scope:
            assert c.reason in (R_SCOPE, R_TEST) and c.detail and "not" in statement(c)
        elif c.probability >= c.threshold:
            assert c.band == "withheld" and c.reason and c.detail and c.label == f"no: {c.reason}"
        else:
            assert c.band == ("uncertain" if c.probability >= UNLIKELY_BELOW else "unlikely")
        words = statement(c)
        if "No radiographic evidence" in words or "No specific features" in words:
            assert c.band == "unlikely"
        if c.called and c.finding != "No Finding":
            assert label_text(words).get(c.finding) in ("positive", "uncertain")
        parent = {"Bacterial pneumonia": "Pneumonia", "Viral pneumonia": "Pneumonia", "COVID-19": "Viral pneumonia"}
        if c.called and c.finding in parent:
            assert by[parent[c.finding]].called                      # the hierarchy holds
    assert not (by["No Finding"].called and by["Pneumonia"].called)


@settings(max_examples=200, deadline=None)
@given(st.lists(probability, min_size=5, max_size=5), st.lists(st.floats(0.01, 0.99), min_size=5, max_size=5),
       st.integers(0, 4), st.floats(0.0, 0.2))
def test_bands_are_monotone_in_the_probability(probs, thresholds, which, step):
    """Raising one finding's probability (its call unchanged) never moves its words down a band."""
    t = dict(zip(FINDINGS, thresholds))
    f = FINDINGS[which]
    low = dict(zip(FINDINGS, probs))
    high = {**low, f: min(1.0, low[f] + step)}
    a = {c.finding: c for c in decide(low, t)[0]}[f]
    b = {c.finding: c for c in decide(high, t)[0]}[f]
    if a.called == b.called and "withheld" not in (a.band, b.band):
        assert ORDER[b.band] >= ORDER[a.band]


def test_near_identical_probabilities_get_neighbouring_words():
    """0.48 and 0.53 under a 0.98 threshold: both 'not called, review the image' (was 'lungs are free' vs
    'review the image')."""
    t = {"No Finding": 0.83, "Pneumonia": 0.98, "Bacterial pneumonia": 0.41, "Viral pneumonia": 0.11, "COVID-19": 0.5}
    words = []
    for p in (0.48, 0.53):
        calls, _ = decide({"No Finding": 0.3, "Pneumonia": p, "Bacterial pneumonia": 0.1, "Viral pneumonia": 0.05,
                           "COVID-19": 0.0}, t)
        words.append(statement(calls[1]))
    assert all(w.startswith("No pneumonia is called at the model's operating point") for w in words)


def test_subtype_named_when_it_leads_and_competing_sibling_says_why():
    """Bacterial 0.85 vs viral 0.14 of a 0.99 pneumonia: bacterial is named, viral (above its 0.11 threshold) says
    'competing subtype'; 0.50 vs 0.49 is indeterminate, with a warning that gives the shares."""
    t = {"No Finding": 0.83, "Pneumonia": 0.98, "Bacterial pneumonia": 0.41, "Viral pneumonia": 0.11, "COVID-19": 0.5}
    calls, warnings = decide({"No Finding": 0.0, "Pneumonia": 0.99, "Bacterial pneumonia": 0.85,
                              "Viral pneumonia": 0.14, "COVID-19": 0.0}, t)
    by = {c.finding: c for c in calls}
    assert by["Bacterial pneumonia"].called and by["Bacterial pneumonia"].band == "likely"
    assert by["Viral pneumonia"].reason == R_COMPETING and not warnings
    assert "No specific features of bacterial" not in " ".join(statement(c) for c in calls)
    calls, warnings = decide({"No Finding": 0.0, "Pneumonia": 0.99, "Bacterial pneumonia": 0.50,
                              "Viral pneumonia": 0.49, "COVID-19": 0.0}, t)
    by = {c.finding: c for c in calls}
    assert by["Bacterial pneumonia"].reason == R_INDETERMINATE == by["Viral pneumonia"].reason
    assert f"{SUBTYPE_MARGIN:.2f}" in warnings[0] and "0.51" in warnings[0]
    calls, _ = decide({"No Finding": 0.3, "Pneumonia": 0.7, "Bacterial pneumonia": 0.6, "Viral pneumonia": 0.1,
                       "COVID-19": 0.0}, t)
    assert {c.finding: c for c in calls}["Bacterial pneumonia"].reason == R_PARENT


def test_the_scope_table_drives_the_calls():
    """Adult films: nothing is called from the image and the figure says why; the same probabilities for a child are
    called; widening the table (data, not code) widens the calls."""
    scope = load_scope(DEFAULT_CHECKPOINT)
    probs = {"No Finding": 0.95, "Pneumonia": 0.02, "Bacterial pneumonia": 0.01, "Viral pneumonia": 0.01,
             "COVID-19": 0.0}
    t = {f: 0.5 for f in FINDINGS}
    adult = {c.finding: c for c in decide(probs, t, scope, "adult")[0]}
    assert not any(c.called for c in adult.values())
    assert adult["No Finding"].reason == R_SCOPE and re.search(r"AUC 0\.\d\d", adult["No Finding"].detail)
    assert {c.finding: c for c in decide(probs, t, scope, "child")[0]}["No Finding"].called
    wider = {**scope, ("adult", "No Finding"): replace(scope[("adult", "No Finding")], call="yes")}
    assert {c.finding: c for c in decide(probs, t, wider, "adult")[0]}["No Finding"].called


def test_covid_is_called_only_with_a_test_result():
    scope = load_scope(DEFAULT_CHECKPOINT)
    probs = {"No Finding": 0.0, "Pneumonia": 0.99, "Bacterial pneumonia": 0.05, "Viral pneumonia": 0.94,
             "COVID-19": 0.9}
    t = {f: 0.5 for f in FINDINGS}
    untested = {c.finding: c for c in decide(probs, t, scope, "child")[0]}
    assert not untested["COVID-19"].called and untested["COVID-19"].reason == R_TEST
    assert untested["Viral pneumonia"].called
    tested = {c.finding: c for c in decide(probs, t, scope, "child", {"COVID-19", "Viral pneumonia"})[0]}
    assert tested["COVID-19"].called


def test_scope_table_rows_are_complete_and_cite_a_figure():
    rows = list(csv.DictReader((Path(DEFAULT_CHECKPOINT) / "scope.csv").open(encoding="utf-8")))
    assert {(r["population"], r["finding"]) for r in rows} == {(p, f) for p in ("child", "adult", "no image")
                                                                for f in FINDINGS}
    for r in rows:
        rule = ScopeRule(r["population"], r["finding"], r["call"], r["metric"],
                         float(r["value"]) if r["value"] else None)
        assert r["call"] in ("yes", "no", "with test")
        assert r["value"] or r["note"], r            # every decision says what it rests on
        if r["value"] and r["call"] == "yes":
            assert float(r["ci_low"]) >= 0.75        # the stated criterion (scripts/scope_table.py)
        if r["value"] and r["call"] != "yes":
            assert float(r["ci_low"]) < 0.75
        assert rule.population in ("child", "adult", "no image")


@pytest.fixture(scope="module")
def pipe():
    from medmm.pipeline import Pipeline

    return Pipeline.from_checkpoint(DEFAULT_CHECKPOINT)


def test_adult_film_is_never_drafted_normal(pipe):
    """An adult film (the shipped DX DICOM and every NIH film with No Finding in nih_sample's first 20): No Finding is
    not called, and the draft never says 'Normal study' or 'free of'."""
    from medmm.service import run_request

    nih = require_shared("nih_sample", "images")
    films = [EXAMPLES / "04_adult_dicom_dx.dcm", *sorted(nih.glob("*"))[:20]]
    for film in films:
        r = run_request(pipe, [film], None)
        assert r.prediction.population == "adult", film.name
        assert "No Finding" not in r.prediction.positive
        text = r.report.to_text()
        assert "Normal study" not in text and "free of" not in text and "lungs are clear" not in text.lower()
        assert "not assessed on adult films" in r.report.impression


def test_draft_table_json_and_sr_agree_on_every_call(pipe, tmp_path):
    """One source of truth: for a child's pneumonia, a child's normal film and an adult film, the table's label,
    the JSON's calls, the draft's model outputs and the SR's text say the same about every finding."""
    import pydicom

    from medmm.report import to_dicom_sr
    from medmm.serve import presenters as fmt
    from medmm.service import run_request

    for film in ("02_child_bacterial_pneumonia.jpeg", "01_child_normal.jpeg", "04_adult_dicom_dx.dcm"):
        r = run_request(pipe, [EXAMPLES / film], "Fever and cough.")
        pred, payload = r.prediction, r.to_json()
        rows = {row[0]: row[3] for row in fmt.findings_rows(pred)}
        outputs = {m["finding"]: m for m in r.report.model_outputs}
        sr = to_dicom_sr(r.report, pred, tmp_path / "sr.dcm")
        sr_text = " ".join(str(getattr(i, "TextValue", "")) for i in pydicom.dcmread(tmp_path / "sr.dcm").ContentSequence)
        assert sr.Modality == "SR"
        for c in payload["calls"]:
            f = c["finding"]
            assert rows[f] == pred.call(f).label
            assert c["called"] == (f in payload["positive"]) == outputs[f]["called"] == rows[f].startswith("YES")
            assert c["band"] == outputs[f]["band"]
            said = "called" if c["called"] else "not called"
            assert f"{f} {c['probability']:.2f} (threshold {c['threshold']:.2f}, {said}, {c['band']}" in sr_text
