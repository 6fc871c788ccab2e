"""The bench's inputs: a PNG, a JPEG and DICOM films (the shared data's, else generated phantoms) and a typical note."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from medmm.training.data import SHARED_DATA

TYPICAL_NOTES = ("58-year-old with fever, productive cough and right basal crackles for three days; "
                 "SpO2 91% on room air. Rule out pneumonia.")


def bench_inputs(workdir: Path) -> tuple[dict[str, Path], list[str]]:
    """Files for the load/predict stages: real ones from ../shared/data when present, else generated.

    ``png``: an 8-bit 1024x1024 PNG (a real radiograph re-encoded when the shared DICOM exists), ``jpeg``:
    a 224x224 Kermany JPEG, ``dicom``: an uncompressed 1024x1024 DX without a VOI window (min-max path),
    ``dicom_jpeg``: a JPEG Baseline CR with a window.
    """
    from PIL import Image

    notes: list[str] = []
    files: dict[str, Path] = {}
    dx = SHARED_DATA / "dicom" / "nhsx_nih_dx.dcm"
    siim = SHARED_DATA / "dicom" / "txv_siim.dcm"
    kermany = SHARED_DATA / "kermany224" / "train" / "NORMAL"
    if dx.exists():
        from medmm.io import load_scan

        pixels = load_scan(dx).pixels
        files["dicom"] = dx
        notes.append("png = the shared NIH DX radiograph re-encoded as an 8-bit PNG")
    else:
        pixels = _phantom(1024)
        files["dicom"] = workdir / "generated.dcm"
        files["dicom"].write_bytes(_dicom_bytes((pixels * 4095).astype(np.uint16)))
        notes.append("../shared/data absent: PNG and DICOM are generated phantoms")
    files["png"] = workdir / "scan.png"
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(files["png"])
    jpegs = sorted(kermany.glob("*.jpeg"))[:1] if kermany.exists() else []
    if jpegs:
        files["jpeg"] = jpegs[0]
    if siim.exists():
        files["dicom_jpeg"] = siim
    return files, notes


def _phantom(size: int, seed: int = 0) -> np.ndarray:
    """A smooth chest-like float image in [0, 1] with noise (not flat, so no blank-image refusal)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.55 + 0.3 * np.cos(3 * (xx - 0.5)) * np.cos(2 * (yy - 0.5)) - 0.25 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) * 20)
    img -= 0.25 * np.exp(-((xx - 0.7) ** 2 + (yy - 0.5) ** 2) * 20)
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32)


def _dicom_bytes(arr: np.ndarray, **attrs: Any) -> bytes:
    """A minimal uncompressed DX DICOM of ``arr`` (pydicom)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    bits = 16 if arr.dtype == np.uint16 else 8
    ds.set_pixel_data(arr, "MONOCHROME2", 12 if bits == 16 else 8)
    for k, v in attrs.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
