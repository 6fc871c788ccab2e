"""DICOM header: reading elements safely and the image attributes validated before any pixel data is decoded.

Coded values (modality, photometric interpretation) are matched against the DICOM defined terms, never echoed as
arbitrary file text; attributes of enhanced multi-frame files are also found in their functional-group macros.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medmm.io.limits import _check_size
from medmm.io.scan import ScanError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset


# DICOM Modality defined terms (PS3.3 C.7.3.1.1.1, incl. retired): only these are echoed back.
_KNOWN_MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO "
    "LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN PR PT PX REG RESP RF RG "
    "RTDOSE RTIMAGE RTPLAN RTRECORD RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XC "
    "CD CF CP CS DD DF DM DS EC FA FS LP MA MS OPR ST VF".split()
)


_KNOWN_PHOTOMETRIC = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT",
     "YBR_RCT", "PALETTE COLOR"}
)
_COLOUR_PHOTOMETRIC = _KNOWN_PHOTOMETRIC - {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"}


def _code(value: Any, known: frozenset[str]) -> str | None:
    """A whitelisted code string from a CS element, or None (never echo arbitrary file text)."""
    if value is None:
        return None
    text = str(value).strip().upper()
    return text if text in known else None


def _int(value: Any, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ScanError("the DICOM header holds an invalid image attribute") from None


def _fg_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """First item of functional-group macro ``sequence`` for ``frame`` (per-frame beats shared)."""
    for groups, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq and len(seq) > idx:
            macro = seq[idx].get(sequence)
            if macro:
                return macro[0]
    return None


def _attr(ds: Dataset, frame: int, keyword: str, sequence: str) -> Any:
    """A top-level attribute, else the one in an enhanced multi-frame functional-group macro."""
    value = ds.get(keyword)
    if value is None or value == "":
        item = _fg_item(ds, frame, sequence)
        value = None if item is None else item.get(keyword)
    return None if value == "" else value


def _as_list(value: Any) -> list[Any]:
    """Values of a single- or multi-valued element (pydicom MultiValue is a Sequence)."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return [value]


def _floats(value: Any, count: int) -> list[float] | None:
    """The first ``count`` values of a (multi-valued) DS/FD element as finite floats, else None."""
    if value is None:
        return None
    try:
        numbers = [float(v) for v in _as_list(value)[:count]]
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


def _transfer_syntax_name(ds: Dataset) -> str | None:
    uid = ds.file_meta.get("TransferSyntaxUID")
    return uid.name if uid is not None and uid.is_transfer_syntax else None


def _has_pixels(ds: Dataset) -> bool:
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


@dataclass
class _Header:
    """Validated DICOM image attributes (no identifiers)."""

    rows: int
    columns: int
    frames: int
    samples: int
    photometric: str | None
    modality: str | None
    bits_stored: int | None


def _dicom_header(ds: Dataset, notes: list[str]) -> _Header:
    """Validate the DICOM image attributes before any pixel data is decoded."""
    from pydicom.pixels import get_decoder

    if "EncryptedAttributesSequence" in ds and not _has_pixels(ds):
        raise ScanError("encrypted DICOM: the image is encrypted and cannot be read")
    if not _has_pixels(ds):
        sop = ds.get("SOPClassUID")
        kind = f" ({sop.name})" if sop is not None and hasattr(sop, "is_valid") and sop.name != str(sop) else ""
        raise ScanError(f"the DICOM file contains no image (no pixel data){kind}")
    rows, columns = _int(ds.get("Rows")), _int(ds.get("Columns"))
    if rows is None or columns is None:
        raise ScanError("the DICOM file has no image size (Rows/Columns missing)")
    frames = _int(ds.get("NumberOfFrames"), 1)
    samples = _int(ds.get("SamplesPerPixel"), 1)
    bits_allocated = _int(ds.get("BitsAllocated"))
    bits_stored = _int(ds.get("BitsStored"), bits_allocated)
    assert frames is not None and samples is not None
    _check_size(rows, columns, frames)
    if samples not in (1, 3):
        raise ScanError(f"unsupported DICOM image: {samples} samples per pixel")
    if bits_allocated not in (1, 8, 16, 32, 64) or bits_stored is None or not 1 <= bits_stored <= bits_allocated:
        raise ScanError("unsupported or inconsistent DICOM bit depth (BitsAllocated/BitsStored)")
    photometric = _code(ds.get("PhotometricInterpretation"), _KNOWN_PHOTOMETRIC)
    if photometric is None:
        if samples != 1:
            raise ScanError("unsupported DICOM photometric interpretation")
        notes.append("photometric interpretation missing or unknown; read as MONOCHROME2")
    elif (samples == 3) != (photometric in _COLOUR_PHOTOMETRIC):
        raise ScanError("inconsistent DICOM header: photometric interpretation does not match samples per pixel")
    if "EncryptedAttributesSequence" in ds:
        notes.append("file carries encrypted attributes (not decrypted)")

    uid = ds.file_meta.TransferSyntaxUID
    name = uid.name if uid.is_transfer_syntax else "unknown"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise ScanError(f"unsupported DICOM transfer syntax: {name}") from None
    if not decoder.is_available:
        raise ScanError(f"unsupported DICOM transfer syntax: {name} (no decoder installed)")
    return _Header(rows, columns, frames, samples, photometric, _code(ds.get("Modality"), _KNOWN_MODALITIES),
                   bits_stored if "PixelData" in ds else None)
