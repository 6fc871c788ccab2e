"""DICOM metadata that leaves the loader: whitelisted, non-identifying header values only.

View position and modality are echoed only when they are DICOM defined terms; patient and study identifiers only as
salted per-process keys (``patient_key``/``study_key``) so that scans of one request can be compared.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from medmm.io.dicom_header import _attr, _code, _floats, _Header, _transfer_syntax_name
from medmm.io.scan import ScanMetadata

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset


# View Position defined terms (DX/CR/MG): only these are echoed back.
_KNOWN_VIEWS = frozenset(
    "AP PA LL RL LATERAL LAT RLD LLD RLO LLO RAO LAO RPO LPO OBLIQUE AXIAL CC MLO ML LM LMO SIO XCC "
    "XCCL XCCM FB".split()
)


def _pixel_spacing(ds: Dataset, notes: list[str]) -> tuple[float, float] | None:
    spacing = _floats(_attr(ds, 0, "PixelSpacing", "PixelMeasuresSequence"), 2)
    if spacing is None:
        spacing = _floats(ds.get("ImagerPixelSpacing"), 2)
        if spacing is not None:
            notes.append("pixel spacing from ImagerPixelSpacing (detector plane, not corrected for magnification)")
    if spacing is None or min(spacing) <= 0:
        return None
    return (spacing[0], spacing[1])


def _dicom_metadata(ds: Dataset, header: _Header, frames: int, windowing: str | None, inverted: bool,
                    notes: list[str]) -> ScanMetadata:
    spacing_notes: list[str] = []
    spacing = _pixel_spacing(ds, spacing_notes)
    return ScanMetadata(
        source_format="dicom",
        modality=header.modality,
        view=_code(ds.get("ViewPosition"), _KNOWN_VIEWS),
        photometric_interpretation=header.photometric,
        bits_stored=header.bits_stored,
        pixel_spacing_mm=spacing,
        transfer_syntax=_transfer_syntax_name(ds),
        rows=header.rows,
        columns=header.columns,
        frames=frames,
        windowing=windowing,
        inverted=inverted,
        notes=tuple(dict.fromkeys(notes + spacing_notes)),
        patient_key=_identity_key(ds, ("PatientID", "PatientName", "PatientBirthDate")),
        study_key=_identity_key(ds, ("StudyInstanceUID",)),
    )


_IDENTITY_SALT = secrets.token_bytes(16)


def _identity_key(ds: Dataset, keywords: tuple[str, ...]) -> str | None:
    """Salted HMAC of the named header values (None when all are empty): comparable within this process only."""
    values = [str(ds.get(k, "") or "").strip() for k in keywords]
    if not any(values):
        return None
    return hmac.new(_IDENTITY_SALT, "\x1f".join(values).encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:16]
