"""DICOM files: the loader. Reads the file, validates its header, checks the decode budgets, decodes, and hands the
pixels to the radiograph, colour or volume path.

The concepts live in their own modules: ``dicom_header`` (element access, the validated image attributes),
``dicom_budget`` (capped inflation, compressed frame headers checked before decoding), ``dicom_pixels`` (Modality
LUT, VOI, padding, inversion), ``dicom_volume`` (CT/MR/PT/NM slices and display window) and ``dicom_meta`` (the
whitelisted ``ScanMetadata``; patient and study identifiers only as salted per-process keys).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from medmm.io.dicom_budget import _check_codestreams, _inflated
from medmm.io.dicom_header import _dicom_header, _has_pixels, _Header
from medmm.io.dicom_meta import _dicom_metadata
from medmm.io.dicom_pixels import _cap_stored, _radiograph_pixels
from medmm.io.dicom_volume import CT_DISPLAY_WINDOW, _has_plane_positions, _Slice, _volume_scan
from medmm.io.pixels import _block_reduce, _check_not_blank, _downsample_note, _luma, _reduce_factor
from medmm.io.scan import _EXIT_EXCEPTIONS, Scan, ScanError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

__all__ = ["CT_DISPLAY_WINDOW", "RADIOGRAPH_MODALITIES"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
# DICOM modalities a plain radiograph arrives as (DR and RG are retired terms; OT / SC: digitised or exported films).
# The one definition: the loader notes other 2-D modalities, the pipeline warns about them.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT", "SC"})
_PIXEL_TAG_LE, _PIXEL_TAG_BE = b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"  # (7FE0,0010) Pixel Data


def _read_dicom(data: bytes, *, stop_before_pixels: bool = False) -> tuple[Dataset, list[str]]:
    """Parse a DICOM byte string (force=True), making sure a transfer syntax is known."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                             ImplicitVRLittleEndian)

    notes: list[str] = []
    if data.startswith(b"DICM"):  # meta header without the 128-byte preamble: pydicom needs one
        data = bytes(128) + data
        notes.append("no DICOM preamble")
    deflated = _inflated(data)  # pydicom would inflate a deflated dataset whole, whatever its size
    try:
        ds = pydicom.dcmread(io.BytesIO(data if deflated is None else deflated), force=True,
                             stop_before_pixels=stop_before_pixels)
    except Exception:  # noqa: BLE001
        raise ScanError("corrupt or truncated DICOM file (the header could not be parsed)") from None
    if deflated is not None:
        del deflated
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # the dataset itself is now plain
    if not stop_before_pixels and not _has_pixels(ds) and (_PIXEL_TAG_LE in data or _PIXEL_TAG_BE in data):
        # pydicom drops an element cut short by the end of the file (it only warns)
        raise ScanError("corrupt or truncated DICOM file (the pixel data element is incomplete)")
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        if implicit is False:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian
        else:
            meta.TransferSyntaxUID = ImplicitVRLittleEndian
        notes.append("no file meta header; transfer syntax inferred as " + meta.TransferSyntaxUID.name)
    return ds, notes


def _decode(ds: Dataset, header: _Header, index: int | None) -> np.ndarray:
    """Decode one frame (``index``) or all frames; YBR is converted to RGB by pydicom.

    The result must match the header: [H, W(, 3)] for one frame, [F, H, W(, 3)] for all frames.
    """
    from pydicom.pixels import pixel_array

    expected: tuple[int, ...] = (header.rows, header.columns) + ((3,) if header.samples == 3 else ())
    if index is None and header.frames > 1:
        expected = (header.frames, *expected)
    _check_codestreams(ds, header, index)
    try:
        arr = pixel_array(ds, index=index, allow_excess_frames=False)
    except _EXIT_EXCEPTIONS:
        raise
    except BaseException:  # noqa: BLE001 - Rust decoders (pylibjpeg-rle) panic with a BaseException
        if "EncryptedAttributesSequence" in ds:
            raise ScanError("encrypted DICOM: the pixel data could not be decoded") from None
        raise ScanError("corrupt or truncated DICOM pixel data (could not be decoded)") from None
    if arr.shape != expected:
        raise ScanError("DICOM pixel data does not match its header (rows, columns, frames or samples)")
    return arr


def _corrupt_dicom_guard(func: Callable[[], _T]) -> _T:
    """pydicom converts element values on access and raises on a corrupt one (bad VR, bad value)."""
    try:
        return func()
    except ScanError:
        raise
    except Exception:  # noqa: BLE001
        raise ScanError("corrupt DICOM file (an image attribute could not be read)") from None


def _load_dicom(data: bytes) -> Scan:
    return _corrupt_dicom_guard(lambda: _dicom_scan(data))


def _dicom_scan(data: bytes) -> Scan:
    ds, notes = _read_dicom(data)
    header = _dicom_header(ds, notes)
    if header.samples == 3 or header.photometric == "PALETTE COLOR":
        return _dicom_colour(ds, header, notes)
    if header.modality in _VOLUME_MODALITIES or _has_plane_positions(ds, header.frames):
        return _dicom_volume(ds, header, notes)
    if header.modality is not None and header.modality not in RADIOGRAPH_MODALITIES:
        notes.append(f"modality {header.modality} is not a chest radiograph modality")
    if header.frames > 1:
        notes.append(f"multi-frame file: first of {header.frames} frames used")
    stored = _cap_stored(_decode(ds, header, 0 if header.frames > 1 else None), ds, notes)
    pixels, windowing, inverted = _radiograph_pixels(stored, ds, header, notes)
    return Scan(pixels=pixels, metadata=_dicom_metadata(ds, header, header.frames, windowing, inverted, notes))


def _dicom_colour(ds: Dataset, header: _Header, notes: list[str]) -> Scan:
    """RGB / YBR / palette DICOM -> RGB -> luma, scaled by the stored bit range."""
    from pydicom.pixels import apply_color_lut

    if header.frames > 1:
        notes.append(f"multi-frame file: first of {header.frames} frames used")
    arr = _decode(ds, header, 0 if header.frames > 1 else None)
    if header.photometric == "PALETTE COLOR":  # palette indices must stay exact
        h, w = arr.shape[:2]
        if _reduce_factor(h, w) > 1:
            arr = _block_reduce(arr, _reduce_factor(h, w), nearest=True)
            notes.append(_downsample_note(w, h, arr.shape[1], arr.shape[0], "nearest pixel"))
    else:
        arr = _cap_stored(arr, ds, notes)
    if header.photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception:  # noqa: BLE001
            raise ScanError("invalid DICOM palette colour lookup table") from None
        full = 255.0 if arr.dtype == np.uint8 else 65535.0
        notes.append("PALETTE COLOR converted to RGB, then to grayscale (ITU-R BT.601 luma)")
    else:
        full = float((1 << (header.bits_stored or 8)) - 1)
        if header.photometric == "RGB":
            notes.append("RGB converted to grayscale (ITU-R BT.601 luma)")
        else:
            notes.append(f"{header.photometric} converted to RGB, then to grayscale (ITU-R BT.601 luma)")
    gray = _luma(arr)
    _check_not_blank(gray)
    pixels = np.clip(gray / np.float32(full), 0.0, 1.0).astype(np.float32)
    return Scan(pixels=pixels, metadata=_dicom_metadata(ds, header, header.frames, "none (colour image)", False, notes))


def _dicom_volume(ds: Dataset, header: _Header, notes: list[str]) -> Scan:
    """CT/MR/PT/NM file (one slice or an enhanced multi-frame) -> volume + display window."""
    stored = _decode(ds, header, None)
    if header.frames == 1:
        stored = stored[None]
    slices = [_Slice(stored[i], ds, i, notes) for i in range(stored.shape[0])]
    return _volume_scan(slices, ds, header, notes)
