"""The input gate (medmm.gate): what is not a chest radiograph is refused everywhere; lateral views are set aside."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medmm.gate import CLASSES, GATE_FILE, load_gate
from medmm.models.checkpoint import DEFAULT_CHECKPOINT
from tests.helpers import ROOT, require_shared

NONCHEST = ROOT / "tests" / "data" / "nonchest"
EXAMPLES = ROOT / "assets" / "examples"
NOT_CHEST = ("photo.jpg", "document.png", "hand_radiograph.jpg")


@pytest.fixture(scope="module")
def pipe():
    from medmm.pipeline import Pipeline

    return Pipeline.from_checkpoint(DEFAULT_CHECKPOINT)


def _lateral_film():
    """A lateral chest film of the COVID collection (its ``view`` column), or skip."""
    root = require_shared("covid_notes")
    rows = list(csv.DictReader((root / "metadata.csv").open(encoding="utf-8")))
    return root / "images" / next(r["image"] for r in rows if r["view"] == "L")


def test_the_shipped_gate_states_its_measured_rates():
    gate = load_gate(DEFAULT_CHECKPOINT)
    assert gate is not None and gate.probe.coef.shape[0] == len(CLASSES)
    figures = json.loads((DEFAULT_CHECKPOINT / GATE_FILE).read_text())["figures"]
    assert figures["nonchest_refused_overall"] >= 0.99
    for source, rate in figures["chest_refused_leave_one_source_out"].items():
        assert rate.get("refused_frontal", rate["refused"]) <= 0.01, source


@pytest.mark.parametrize("name", NOT_CHEST)
def test_what_is_not_a_chest_radiograph_is_refused_with_a_reason(pipe, name):
    """A photo, a document page and a hand radiograph: no probabilities, no calls, no draft, a sentence."""
    from medmm.service import run_request

    r = run_request(pipe, [NONCHEST / name], "Fever and cough.")
    payload = r.to_json()
    assert payload["status"] == "refused" and r.prediction.status == "refused"
    assert "does not look like a chest radiograph" in payload["refusal"]
    assert payload["findings"] == {} and payload["positive"] == [] and payload["calls"] == []
    assert payload["report"] == "" and r.report is None and r.explanation is None
    assert payload["gate"][0]["chest_radiograph"] is False and payload["gate"][0]["p_chest_radiograph"] < 0.5
    assert payload["refusal"] in payload["warnings"]


def test_chest_films_pass_and_a_lateral_is_set_aside(pipe):
    """Every shipped chest example passes; a lateral JPEG next to a frontal film is recognised from its pixels and
    set aside (the findings are the frontal film's alone); a lateral alone is refused."""
    lateral = _lateral_film()
    for film in ("01_child_normal.jpeg", "02_child_bacterial_pneumonia.jpeg", "03_adult_covid19.jpg",
                 "04_adult_dicom_dx.dcm"):
        assert pipe.predict([EXAMPLES / film]).status == "ok", film
    frontal = EXAMPLES / "03_adult_covid19.jpg"
    both = pipe.prepare([frontal, lateral])
    assert both.refusal is None and len(both.scans) == 1 and both.pixels.shape[1] == 1
    assert both.gate[1]["lateral"] and both.gate[1]["set_aside"] and not both.gate[0]["set_aside"]
    assert any("Scan 2 of 2 looks like a lateral" in w for w in both.warnings)
    alone = pipe.predict([frontal])
    two = pipe.predict([frontal, lateral])
    assert np.allclose(list(two.findings.values()), list(alone.findings.values()), atol=1e-6)
    only = pipe.predict([lateral])
    assert only.status == "refused" and "lateral" in only.refusal


def test_one_refused_scan_refuses_the_request(pipe):
    pred = pipe.predict([EXAMPLES / "01_child_normal.jpeg", NONCHEST / "photo.jpg"])
    assert pred.status == "refused" and pred.refusal.startswith("Scan 2 of 2 does not look like a chest radiograph")


def test_the_batch_csv_marks_refused_rows(tmp_path):
    """``predict --manifest``: a refused row has status 'refused', no probabilities, and the reason in warnings."""
    import subprocess
    import sys

    manifest = tmp_path / "m.csv"
    manifest.write_text("image,notes\n" + f"{NONCHEST / 'photo.jpg'},cough\n" +
                        f"{EXAMPLES / '02_child_bacterial_pneumonia.jpeg'},\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    done = subprocess.run([sys.executable, "-m", "medmm", "predict", "--manifest", str(manifest), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows[0]["status"] == "refused" and rows[0]["Pneumonia"] == "" and rows[0]["positive"] == ""
    assert "does not look like a chest radiograph" in rows[0]["warnings"]
    assert rows[1]["status"] == "ok" and rows[1]["population"] == "child" and float(rows[1]["Pneumonia"]) > 0.5


def test_a_pipeline_without_a_gate_analyses_everything(pipe):
    """Checkpoints without gate.json (older or user-trained ones) keep working: nothing is refused."""
    gate, pipe.gate = pipe.gate, None
    try:
        assert pipe.predict([NONCHEST / "photo.jpg"]).status == "ok"
    finally:
        pipe.gate = gate
