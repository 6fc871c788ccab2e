"""The bench's inputs: a PNG, a JPEG and DICOM films (the shared data's, else the shipped examples) and a typical note."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmm.training.data import SHARED_DATA

EXAMPLES = Path(__file__).resolve().parents[3] / "assets" / "examples"

TYPICAL_NOTES = ("58-year-old with fever, productive cough and right basal crackles for three days; "
                 "SpO2 91% on room air. Rule out pneumonia.")


def bench_inputs(workdir: Path) -> tuple[dict[str, Path], list[str]]:
    """Files for the load/predict stages: real ones from ../shared/data when present, else the shipped examples
    (``assets/examples``: real radiographs, so the input gate lets them through as it would a clinician's film).

    ``png``: an 8-bit 1024x1024 PNG (a real radiograph re-encoded when the shared DICOM exists), ``jpeg``:
    a 224x224 Kermany JPEG, ``dicom``: an uncompressed 1024x1024 DX without a VOI window (min-max path),
    ``dicom_jpeg``: a JPEG Baseline CR with a window.
    """
    from PIL import Image

    notes: list[str] = []
    files: dict[str, Path] = {}
    from medmm.io import load_scan

    dx = SHARED_DATA / "dicom" / "nhsx_nih_dx.dcm"
    siim = SHARED_DATA / "dicom" / "txv_siim.dcm"
    kermany = SHARED_DATA / "kermany224" / "train" / "NORMAL"
    if dx.exists():
        files["dicom"] = dx
        notes.append("png = the shared NIH DX radiograph re-encoded as an 8-bit PNG")
    else:
        files["dicom"] = EXAMPLES / "04_adult_dicom_dx.dcm"
        notes.append("../shared/data absent: the shipped examples (assets/examples) instead")
    pixels = load_scan(files["dicom"]).pixels
    files["png"] = workdir / "scan.png"
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(files["png"])
    jpegs = sorted(kermany.glob("*.jpeg"))[:1] if kermany.exists() else [EXAMPLES / "01_child_normal.jpeg"]
    files["jpeg"] = jpegs[0]
    if siim.exists():
        files["dicom_jpeg"] = siim
    return files, notes

