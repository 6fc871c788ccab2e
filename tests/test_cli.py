"""`python -m medmm predict` — single request JSON, batch manifest, and bad input handling."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmm.__main__ import main
from medmm.labels import FINDINGS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    img = (rng.random((300, 260)) * 255).astype(np.uint8)
    path = d / "scan.png"
    Image.fromarray(img).save(path)
    return path


def test_predict_json_has_the_documented_keys(scan, capsys, tmp_path):
    report_out = tmp_path / "report.txt"
    assert main(["predict", str(scan), "--notes", "Fever and cough for 3 days.", "--json",
                 "--report-out", str(report_out)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["findings"]) == list(FINDINGS)
    assert all(0.0 <= p <= 1.0 for p in out["findings"].values())
    assert out["positive"] == [f for f in FINDINGS if out["findings"][f] >= out["thresholds"][f]]
    assert out["energy"]["joules"] > 0 and out["energy"]["method"]
    assert set(out["energy"]["stages"]) >= {"load", "inference", "report"}
    assert out["latency_s"] > 0 and isinstance(out["warnings"], list)
    assert out["modalities"] == ["image", "notes"]
    assert "IMPRESSION" in out["report"].upper() and "FINDINGS" in out["report"].upper() and report_out.read_text() == out["report"]


def test_manifest_batch_reports_bad_rows_and_continues(scan, tmp_path, capsys):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("this is not an image")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,notes\n{scan},cough\n{bad},\n{tmp_path / 'missing.png'},\n,shortness of breath\n")
    out = tmp_path / "out.csv"
    assert main(["predict", "--manifest", str(manifest), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["image", *FINDINGS, "positive", "error"]
    assert len(rows) == 4
    assert rows[0]["error"] == "" and 0 <= float(rows[0]["Pneumonia"]) <= 1
    assert rows[1]["error"] and rows[1]["Pneumonia"] == ""
    assert rows[2]["error"]
    assert rows[3]["error"] == "" and rows[3]["Pneumonia"] != ""  # notes-only row


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"\x00" * 10)
    for args in ([str(bad)], [str(tmp_path / "nope.png")], []):
        proc = subprocess.run([sys.executable, "-m", "medmm", "predict", *args, "--json"], capture_output=True,
                              text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in proc.stderr
