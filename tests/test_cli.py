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
from tests.helpers import chest_film

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    img = (chest_film(0) * 255).astype(np.uint8)    # a real chest film: the input gate refuses noise
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
    # positives are the calls (medmm.calls.decide: hierarchy, subtype margin, scope), each at or above its threshold
    assert out["positive"] == [c["finding"] for c in out["calls"] if c["called"]]
    assert all(out["findings"][f] >= out["thresholds"][f] for f in out["positive"])
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
    assert list(rows[0]) == ["image", "status", *FINDINGS, "positive", "population", "warnings", "error"]
    assert len(rows) == 4
    assert rows[0]["error"] == "" and 0 <= float(rows[0]["Pneumonia"]) <= 1 and rows[0]["status"] == "ok"
    assert rows[1]["error"] and rows[1]["Pneumonia"] == "" and rows[1]["status"] == "error"
    assert rows[2]["error"]
    assert rows[3]["error"] == "" and rows[3]["Pneumonia"] != ""  # notes-only row
    assert rows[3]["population"] == "no image"


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"\x00" * 10)
    for args in ([str(bad)], [str(tmp_path / "nope.png")], []):
        proc = subprocess.run([sys.executable, "-m", "medmm", "predict", *args, "--json"], capture_output=True,
                              text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in proc.stderr


def test_manifest_warnings_column_carries_scope_and_consistency_warnings(tmp_path, monkeypatch):
    """The batch CSV shows an internally inconsistent row (No Finding + viral + COVID-19) and scope warnings."""
    import medmm.__main__ as cli
    from medmm.prediction import Prediction

    probs = {"No Finding": 0.6, "Pneumonia": 0.3, "Bacterial pneumonia": 0.1, "Viral pneumonia": 0.7, "COVID-19": 0.8}
    pred = Prediction(findings=probs, thresholds={f: 0.5 for f in FINDINGS},
                      positive=("No Finding", "Viral pneumonia", "COVID-19"), modalities=("notes",),
                      warnings=("adult radiograph: the model is weak here",))
    fake = type("FakePipe", (), {"findings": FINDINGS, "predict": lambda self, scans, notes: pred})()
    monkeypatch.setattr(cli, "_pipeline", lambda *a, **k: fake)
    manifest = tmp_path / "m.csv"
    manifest.write_text("notes\nfever and cough\n")
    out = tmp_path / "out.csv"
    assert main(["predict", "--manifest", str(manifest), "--out", str(out)]) == 0
    row = next(csv.DictReader(out.open()))
    assert row["positive"] == "No Finding;Viral pneumonia;COVID-19"
    warnings = row["warnings"].split(" | ")
    assert "adult radiograph: the model is weak here" in warnings
    assert any("internally inconsistent" in w for w in warnings)


def test_report_out_dcm_is_a_valid_sr_and_checkpoint_accepts_a_run_folder(scan, tmp_path, capsys):
    import pydicom

    run = tmp_path / "runs" / "smoke"
    run.mkdir(parents=True)
    (run / "checkpoint").symlink_to(ROOT / "checkpoints" / "default", target_is_directory=True)
    sr_path, txt_path = tmp_path / "draft.dcm", tmp_path / "draft.txt"
    assert main(["predict", str(scan), "--notes", "Fever and cough.", "--checkpoint", str(run), "--json",
                 "--report-out", str(sr_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    ds = pydicom.dcmread(sr_path)                       # no force: a proper Part 10 file
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.11" and ds.Modality == "SR"
    values = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue for item in ds.ContentSequence}
    assert values["Impressions"] and values["Impressions"] in out["report"]
    assert main(["predict", str(scan), "--notes", "Fever and cough.", "--report-out", str(txt_path)]) == 0
    assert txt_path.read_text(encoding="utf-8").startswith("INDICATION:")
    capsys.readouterr()


def test_resolve_checkpoint_run_folder_or_checkpoint(tmp_path):
    from medmm.__main__ import CliError, resolve_checkpoint

    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / "medmm.json").write_text("{}")
    assert resolve_checkpoint(str(tmp_path / "run")) == str(tmp_path / "run" / "checkpoint")
    assert resolve_checkpoint(str(tmp_path / "run" / "checkpoint")) == str(tmp_path / "run" / "checkpoint")
    with pytest.raises(CliError, match="no medmm checkpoint in"):
        resolve_checkpoint(str(tmp_path))
    with pytest.raises(CliError, match="not found"):
        resolve_checkpoint(str(tmp_path / "missing"))


def test_bad_input_is_refused_before_torch_loads_and_names_the_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    code = ("import sys; from medmm.__main__ import main; "
            f"rc = [main(['predict', {str(tmp_path / 'nope.png')!r}]), main(['predict', {str(empty)!r}]), "
            f"main(['predict', '--notes', 'x', '--checkpoint', {str(tmp_path)!r}])]; "
            "print(rc, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.stdout.strip() == "[2, 2, 2] False", proc.stdout + proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 3
    assert "nope.png" in errors[0] and "not found" in errors[0]
    assert "empty.png" in errors[1] and "empty" in errors[1] and str(tmp_path) not in errors[0] + errors[1]
    assert str(tmp_path) in errors[2] and "no medmm checkpoint" in errors[2]


def test_evaluation_table_is_readable():
    from medmm.__main__ import evaluation_table

    metric = lambda v: {"value": v, "ci95": [v - 0.05, v + 0.04]}   # noqa: E731
    result = {"manifest": "m.csv", "rows": 12, "evaluated": 11, "checkpoint": "default",
              "errors": [{"row": 3, "error": "the file is empty (0 bytes)"}],
              "findings": {"Pneumonia": {"n": 11, "n_positive": 5, "threshold": 0.62, "auc": metric(0.912),
                                         "sensitivity": metric(0.8), "specificity": metric(0.83), "f1": metric(0.8),
                                         "ece": 0.041},
                           "COVID-19": None}}
    table = evaluation_table(result)
    lines = table.splitlines()
    assert "11 of 12 rows" in lines[0] and lines[2].split()[:2] == ["finding", "n"]
    assert "0.912 [0.86-0.95]" in table and "0.041" in table
    assert "COVID-19" in table and "not evaluable" in table and "row 3" in table
    assert max(len(l) for l in lines) < 140
