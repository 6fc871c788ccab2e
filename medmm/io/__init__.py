"""Load a chest image (DICOM, PNG, JPEG, ...) into a display-ready float array plus safe metadata.

All input validation for scans lives here: the rest of medmm can assume a ``Scan`` whose ``pixels``
are a finite ``[H, W]`` float32 array in ``[0, 1]`` in MONOCHROME2 sense (bright = dense / bone),
with the DICOM value-of-interest (VOI) transform and EXIF orientation already applied.

Output ranges
-------------
* ``Scan.pixels``: float32 ``[0, 1]``. DICOM: Modality LUT (rescale or LUT sequence), then VOI: the VOI
  LUT Sequence, else the first Window Center/Width, else a robust min-max over the 0.5-99.5 percentiles
  of the non-padding pixels; MONOCHROME1 is inverted after windowing; padding pixels are 0 (black).
  Plain images: 8-bit values / 255; 16-bit values / (2**b - 1), b the smallest of 8/10/12/14/16 bits
  that holds the image's maximum (12-bit data written into 16-bit PNGs is common), noted when b < 16.
* ``Scan.volume`` (CT/MR/PT/NM only): float32 ``[D, H, W]`` modality units (HU for CT), slices sorted
  along the slice normal; padding voxels are set to the volume's minimum non-padding value.
* ``Scan.volume_pixels``: the volume windowed to ``[0, 1]`` for a slice viewer; CT uses
  ``CT_DISPLAY_WINDOW`` (a wide lung-to-soft-tissue window), other modalities the file's window or
  min-max.

Limits
------
* ``MAX_FILE_BYTES`` (200 MiB): larger files are refused before they are read; ``MAX_REQUEST_BYTES``
  (256 MiB) for all the files of one ``load_scans`` call together, from their sizes before any is read.
* ``MAX_PIXELS`` (50 megapixels): width x height (x frames for DICOM; total voxels for a series),
  checked from the header before any pixel data is decoded (decompression-bomb guard; Pillow's own
  ``DecompressionBombError`` is caught as well, its global limit is left untouched). A chest film is
  at most ~4300 x 4300 (18.5 MP) from a detector and ~21 MP from film digitised at 300 dpi.
* ``MAX_REQUEST_PIXELS`` (100 megapixels): the same count summed over the files of one ``load_scans``
  call, from their headers before any of them is decoded.
* ``MAX_SIDE_PX`` (2048): radiographs (and volume slices) whose long side is larger are downsampled by an
  integer factor right after decoding (JPEG: during decoding, by libjpeg's DCT scaling), by area
  averaging (nearest pixel when the DICOM declares padding values, so they stay exact); a note says so.
  ``Scan.pixels`` therefore never exceeds 2048 x 2048 (16 MB as float32), which bounds everything
  downstream (model input, saliency maps, viewer). ``ScanMetadata.rows/columns`` stay the file's own.
* ``MIN_SIDE_PX`` (16): a smaller side is not a usable image.

Peak memory of one load is about 8 bytes per decoded pixel for the largest accepted file (50 MP:
~0.4 GB), retained memory at most ``MAX_SIDE_PX**2`` floats per scan.

Errors are raised as ``ScanError`` with a one-line message that never contains patient identifiers;
metadata holds only whitelisted, non-identifying fields.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import math
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

__all__ = [
    "CT_DISPLAY_WINDOW",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_PIXELS",
    "MAX_SIDE_PX",
    "MIN_SIDE_PX",
    "Scan",
    "ScanError",
    "ScanMetadata",
    "load_scan",
    "load_scans",
    "load_series",
]

MAX_FILE_BYTES = 200 * 1024 * 1024
"""Largest accepted file (200 MiB); a chest radiograph is rarely above 30 MB."""
MAX_REQUEST_BYTES = 256 * 1024 * 1024
"""Largest total size of the files of one ``load_scans`` call (checked before any is read)."""
MAX_PIXELS = 50_000_000
"""Largest accepted image: rows x columns (x frames for DICOM, total voxels for a series), from the header."""
MAX_REQUEST_PIXELS = 100_000_000
"""Largest sum of ``MAX_PIXELS``-style counts over the files of one ``load_scans`` call, from their headers."""
MAX_SIDE_PX = 2048
"""Loaded pixels are downsampled (integer factor, area average) so that neither side exceeds this."""
MIN_SIDE_PX = 16
"""Smallest accepted image side in pixels."""
ROBUST_PERCENTILES = (0.5, 99.5)
"""Percentiles of the non-padding pixels used for min-max windowing when a file carries no VOI."""
CT_DISPLAY_WINDOW = (-400.0, 1500.0)
"""(centre, width) in HU for CT display: lung parenchyma to soft tissue (-1150..350 HU)."""

_PERCENTILE_SAMPLE = 4_000_000  # pixels; larger images are subsampled (strided) for percentiles
_VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
_RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "OT"})
# DICOM Modality defined terms (PS3.3 C.7.3.1.1.1, incl. retired): only these are echoed back.
_KNOWN_MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO "
    "LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN PR PT PX REG RESP RF RG "
    "RTDOSE RTIMAGE RTPLAN RTRECORD RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA XA XC "
    "CD CF CP CS DD DF DM DS EC FA FS LP MA MS OPR ST VF".split()
)
# View Position defined terms (DX/CR/MG): only these are echoed back.
_KNOWN_VIEWS = frozenset(
    "AP PA LL RL LATERAL LAT RLD LLD RLO LLO RAO LAO RPO LPO OBLIQUE AXIAL CC MLO ML LM LMO SIO XCC "
    "XCCL XCCM FB".split()
)
_KNOWN_PHOTOMETRIC = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT",
     "YBR_RCT", "PALETTE COLOR"}
)
_COLOUR_PHOTOMETRIC = _KNOWN_PHOTOMETRIC - {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"}
_PIXEL_TAG_LE, _PIXEL_TAG_BE = b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"  # (7FE0,0010) Pixel Data

# (magic, offset, source_format, Pillow plugin). Pillow is limited to these plugins (no EPS/Ghostscript).
_IMAGE_MAGIC: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "png", "PNG"),
    (b"\xff\xd8\xff", 0, "jpeg", "JPEG"),
    (b"GIF87a", 0, "gif", "GIF"),
    (b"GIF89a", 0, "gif", "GIF"),
    (b"II*\x00", 0, "tiff", "TIFF"),
    (b"MM\x00*", 0, "tiff", "TIFF"),
    (b"BM", 0, "bmp", "BMP"),
    (b"WEBP", 8, "webp", "WEBP"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "jpeg2000", "JPEG2000"),
    (b"\xffO\xffQ", 0, "jpeg2000", "JPEG2000"),
)
_NON_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "a gzip archive; decompress it first"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "an executable"),
    (b"\xd0\xcf\x11\xe0", "an Office document"),
)
_EXTENSIONS = {
    "dcm": "dicom", "dicom": "dicom", "dic": "dicom", "png": "png", "jpg": "jpeg", "jpeg": "jpeg",
    "jpe": "jpeg", "gif": "gif", "tif": "tiff", "tiff": "tiff", "bmp": "bmp", "webp": "webp",
    "jp2": "jpeg2000", "j2k": "jpeg2000",
}


class ScanError(ValueError):
    """Clear, user-facing reason a file cannot be used (one line, no identifiers)."""


@dataclass(frozen=True)
class ScanMetadata:
    """Non-identifying facts about a loaded scan (no names, IDs, dates, institutions or UIDs)."""

    source_format: str  # "dicom" | "png" | "jpeg" | "gif" | "tiff" | "bmp" | "webp" | "jpeg2000"
    modality: str | None  # DICOM Modality (CR, DX, CT, MR...) or None for plain images
    view: str | None  # ViewPosition (PA/AP/LL...) when present
    photometric_interpretation: str | None
    bits_stored: int | None
    pixel_spacing_mm: tuple[float, float] | None  # (row, column) spacing: PixelSpacing or ImagerPixelSpacing
    transfer_syntax: str | None  # name, e.g. "JPEG Baseline (Process 1)"
    rows: int
    columns: int
    frames: int
    windowing: str | None  # what VOI was applied: "VOI LUT", "window C=.. W=..", "min-max ...", ...
    inverted: bool  # MONOCHROME1 (or an INVERSE presentation LUT) was inverted
    notes: tuple[str, ...] = ()  # data-quality remarks
    # Salted (per-process random salt) HMACs of the DICOM patient / study identifiers, only so that scans of
    # one request can be compared (medmm.study); never shown, logged or exported (not in repr or to_dict).
    patient_key: str | None = field(default=None, repr=False, compare=False, metadata={"private": True})
    study_key: str | None = field(default=None, repr=False, compare=False, metadata={"private": True})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists); the private comparison keys are left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.metadata.get("private"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class Scan:
    """A loaded image: display-ready ``pixels`` and, for CT/MR, the volume in modality units."""

    pixels: np.ndarray  # [H, W] float32 in [0, 1], windowed, MONOCHROME2 sense, EXIF orientation applied
    metadata: ScanMetadata
    volume: np.ndarray | None = None  # [D, H, W] float32 modality units (HU for CT), sorted; None for radiographs
    volume_pixels: np.ndarray | None = None  # [D, H, W] float32 [0, 1] windowed for a slice viewer

    def __repr__(self) -> str:  # arrays summarised: a full numpy repr is noise in logs
        vol = None if self.volume is None else tuple(self.volume.shape)
        return f"Scan(pixels={tuple(self.pixels.shape)}, volume={vol}, metadata={self.metadata!r})"


# --------------------------------------------------------------------------- public API


def load_scan(source: str | os.PathLike[str] | bytes, *, filename: str | None = None) -> Scan:
    """Load one image file (DICOM, PNG, JPEG, GIF, TIFF, BMP, WebP, JPEG 2000), detected by content.

    ``filename`` is only a hint used to note a misleading extension; it is never stored.
    Raises ``ScanError`` for anything that cannot be used as an image.
    """
    return _guarded(lambda: _load_scan(source, filename))


def load_series(sources: Sequence[str | os.PathLike[str] | bytes]) -> Scan:
    """Load the single-frame DICOM files of one CT/MR series into a sorted volume.

    Slices are sorted by ImagePositionPatient projected on the slice normal (else InstanceNumber);
    each slice gets its own modality LUT (HU for CT). ``pixels`` is the windowed middle slice.
    """
    return _guarded(lambda: _load_series(list(sources)))


def load_scans(sources: Sequence[str | os.PathLike[str] | bytes]) -> list[Scan]:
    """Load several files: one CT/MR series (all single-frame DICOM, same SeriesInstanceUID) becomes
    one volume ``Scan``; otherwise each file is loaded on its own."""
    return _guarded(lambda: _load_scans(list(sources)))


# --------------------------------------------------------------------------- orchestration

_T = TypeVar("_T")
_EXIT_EXCEPTIONS = (KeyboardInterrupt, SystemExit, GeneratorExit)


def _guarded(func: Callable[[], _T]) -> _T:
    """Run a loader so that only ``ScanError`` escapes (messages of other exceptions may hold values)."""
    try:
        return func()
    except ScanError:
        raise
    except MemoryError:
        raise ScanError("the image is too large to load into memory") from None
    except _EXIT_EXCEPTIONS:
        raise
    except BaseException as exc:  # noqa: BLE001 - incl. pyo3 PanicException from Rust decoders
        logger.warning("unexpected %s while loading a scan", type(exc).__name__)
        raise ScanError("the file could not be read (corrupt or unsupported)") from None


def _load_scan(source: Any, filename: str | None) -> Scan:
    data, hint = _read_source(source)
    fmt, plugin = _sniff(data)
    notes = _extension_notes(filename or hint, fmt)
    if fmt == "dicom":
        scan = _load_dicom(data)
    else:
        scan = _load_pillow(data, fmt, plugin)
    if notes:
        scan = _with_notes(scan, notes)
    return scan


def _load_scans(sources: list[Any]) -> list[Scan]:
    if not sources:
        raise ScanError("no files were given")
    _check_request_bytes(sources)
    read = [_numbered(i, len(sources), lambda s=s: _read_source(s)) for i, s in enumerate(sources)]
    blobs = [blob for blob, _ in read]
    _check_request_pixels(blobs)
    if len(blobs) > 1 and _one_series(blobs):
        return [_load_series(blobs)]
    # the file name (when there is one) is kept only as an extension hint for the "content vs extension" note
    return [_numbered(i, len(read), lambda r=r: _load_scan(r[0], r[1])) for i, r in enumerate(read)]


def _check_request_bytes(sources: list[Any]) -> None:
    """Refuse a request whose files add up to more than ``MAX_REQUEST_BYTES``, before reading any of them."""
    total = 0
    for source in sources:
        if isinstance(source, (bytes, bytearray, memoryview)):
            total += len(source)
        elif isinstance(source, (str, os.PathLike)):
            try:
                total += Path(source).stat().st_size
            except (OSError, ValueError):
                continue  # reported by the per-file read
    if total > MAX_REQUEST_BYTES:
        raise ScanError(f"the files of this request are larger than {MAX_REQUEST_BYTES // (1024 * 1024)} MB together")


def header_pixels(data: bytes) -> int:
    """Pixels a file declares in its header (rows x columns x frames), without decoding; 0 if unreadable."""
    try:
        fmt, plugin = _sniff(data)
    except ScanError:
        return 0
    try:
        if fmt == "dicom":
            ds, _ = _read_dicom(data, stop_before_pixels=True)
            return max(int(ds.get("Rows") or 0), 0) * max(int(ds.get("Columns") or 0), 0) * max(
                int(ds.get("NumberOfFrames") or 1), 1)
        from PIL import Image

        with Image.open(io.BytesIO(data), formats=[plugin] if plugin else None) as im:
            width, height = im.size
            return int(width) * int(height)
    except Exception:  # noqa: BLE001 - an unreadable header is reported by the per-file load
        return 0


def _check_request_pixels(blobs: list[bytes]) -> None:
    """Refuse a request whose headers declare more than ``MAX_REQUEST_PIXELS`` in total, before decoding."""
    if len(blobs) < 2:
        return  # one file: its own header check (MAX_PIXELS) is stricter
    total = sum(header_pixels(b) for b in blobs)
    if total > MAX_REQUEST_PIXELS:
        raise ScanError(f"the images of this request are too large together ({total / 1e6:.0f} megapixels); "
                        f"the limit is {MAX_REQUEST_PIXELS // 1_000_000} megapixels per request")


def _numbered(index: int, total: int, func: Callable[[], _T]) -> _T:
    """Prefix a ``ScanError`` with the file's position (never its name) when several files are given."""
    if total == 1:
        return func()
    try:
        return func()
    except ScanError as exc:
        raise ScanError(f"file {index + 1} of {total}: {exc}") from None


def _one_series(blobs: list[bytes]) -> bool:
    """True when every blob is a single-frame CT/MR/PT/NM DICOM slice of the same series."""
    uids = set()
    for data in blobs:
        if _sniff(data)[0] != "dicom":
            return False
        try:
            ds, _ = _read_dicom(data, stop_before_pixels=True)
            modality = _code(ds.get("Modality"), _KNOWN_MODALITIES)
            frames = int(ds.get("NumberOfFrames") or 1)
            uid = str(ds.get("SeriesInstanceUID") or "")
        except Exception:  # noqa: BLE001 - an unreadable header is reported by the per-file load
            return False
        if modality not in _VOLUME_MODALITIES or frames != 1 or not uid:
            return False
        uids.add(uid)
    return len(uids) == 1


def _with_notes(scan: Scan, extra: list[str]) -> Scan:
    return replace(scan, metadata=replace(scan.metadata, notes=scan.metadata.notes + tuple(extra)))


# --------------------------------------------------------------------------- reading and sniffing


def _read_source(source: Any) -> tuple[bytes, str | None]:
    """Return the file's bytes (size-checked) and, for a path, its name as an extension hint."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, hint = bytes(source), None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if path.is_dir():
                raise ScanError("the path is a folder, not a file")
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise ScanError(_too_big_file_message())
            with path.open("rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except ScanError:
            raise
        except FileNotFoundError:
            raise ScanError("file not found") from None
        except PermissionError:
            raise ScanError("the file cannot be opened (permission denied)") from None
        except OSError:
            raise ScanError("the file cannot be read") from None
        except ValueError:  # e.g. an embedded NUL byte in the path
            raise ScanError("invalid file path") from None
        hint = path.name
    else:
        raise ScanError(f"unsupported input type {type(source).__name__}; give a path or bytes")
    if not data:
        raise ScanError("the file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ScanError(_too_big_file_message())
    return data, hint


def _too_big_file_message() -> str:
    return f"the file is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MB limit"


def _sniff(data: bytes) -> tuple[str, str | None]:
    """Detect the format from content: ("dicom", None) or (source_format, Pillow plugin).

    Order matters: the DICM marker is checked first because a DICOM preamble may hold a TIFF header.
    Files without a preamble are probed with pydicom (force=True) and must look like a dataset.
    """
    if data[128:132] == b"DICM" or data.startswith(b"DICM"):
        return "dicom", None
    for magic, offset, fmt, plugin in _IMAGE_MAGIC:
        if data[offset : offset + len(magic)] == magic and (fmt != "webp" or data[:4] == b"RIFF"):
            return fmt, plugin
    for magic, what in _NON_IMAGE_MAGIC:
        if data.startswith(magic):
            raise ScanError(f"not an image: the file is {what}")
    if _looks_like_text(data[:4096]):
        raise ScanError("not an image: the file is text (expected DICOM, PNG or JPEG)")
    if _looks_like_headerless_dicom(data):
        return "dicom", None
    raise ScanError("unrecognised file format (expected DICOM, PNG, JPEG, TIFF, BMP, GIF or WebP)")


def _looks_like_text(sample: bytes) -> bool:
    if not sample or b"\x00" in sample:
        return False
    printable = sum(1 for b in sample if b in (9, 10, 13) or 32 <= b <= 126 or b >= 128)
    return printable / len(sample) >= 0.97


def _looks_like_headerless_dicom(data: bytes) -> bool:
    """A dataset without preamble/meta starts with a small group number (0008 is typical)."""
    if len(data) < 8:
        return False
    group_le = int.from_bytes(data[:2], "little")
    group_be = int.from_bytes(data[:2], "big")
    if min(group_le, group_be) > 0x0028:
        return False
    try:
        ds, _ = _read_dicom(data, stop_before_pixels=True)
    except ScanError:
        return False
    keys = {"Rows", "SOPClassUID", "Modality", "PixelData", "PhotometricInterpretation"}
    return any(k in ds for k in keys)


def _extension_notes(name: str | None, fmt: str) -> list[str]:
    """Note (extension only, never the name) when a file's extension disagrees with its content."""
    if not name or "." not in name:
        return []
    ext = name.rsplit(".", 1)[1].lower()
    expected = _EXTENSIONS.get(ext)
    if expected is None or expected == fmt:
        return []
    return [f"file extension .{ext} does not match its content ({fmt}); read as {fmt}"]


def _check_size(rows: int, columns: int, frames: int = 1) -> None:
    """Reject zero-size, tiny or absurdly large images from header values, before decoding."""
    if rows <= 0 or columns <= 0 or frames <= 0:
        raise ScanError("the image has zero size")
    if rows * columns * frames > MAX_PIXELS:
        raise ScanError(
            f"the image is too large ({columns}x{rows}"
            + (f"x{frames} frames" if frames > 1 else "")
            + f"); the limit is {MAX_PIXELS // 1_000_000} megapixels"
        )
    if min(rows, columns) < MIN_SIDE_PX:
        raise ScanError(f"the image is too small ({columns}x{rows}); each side needs at least {MIN_SIDE_PX} pixels")


# --------------------------------------------------------------------------- shared pixel maths


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an [..., 3] array, as float32 in the input's units."""
    rgb = rgb.astype(np.float32, copy=False)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)


def _check_finite(values: np.ndarray) -> None:
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ScanError("the image contains NaN or infinite pixel values")


def _check_not_blank(values: np.ndarray, valid: np.ndarray | None = None) -> None:
    sample = values if valid is None else values[valid]
    if sample.size == 0 or sample.min() == sample.max():
        raise ScanError("blank image: all pixels have the same value")


def _robust_range(values: np.ndarray, valid: np.ndarray | None) -> tuple[float, float]:
    """0.5-99.5 percentile range of the valid pixels (true min/max when the percentiles coincide)."""
    sample = (values if valid is None else values[valid]).ravel()
    if sample.size > _PERCENTILE_SAMPLE:
        sample = sample[:: math.ceil(sample.size / _PERCENTILE_SAMPLE)]
    lo, hi = (float(v) for v in np.percentile(sample, ROBUST_PERCENTILES))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return lo, hi


def _min_max(values: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, str]:
    lo, hi = _robust_range(values, valid)
    out = np.clip((values.astype(np.float32) - lo) / np.float32(hi - lo), 0.0, 1.0)
    return out, f"min-max ({ROBUST_PERCENTILES[0]:g}-{ROBUST_PERCENTILES[1]:g} percentiles)"


def _window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM windowing (PS3.3 C.11.2.1.2-3) straight to [0, 1].

    pydicom's ``apply_windowing`` maps to the stored-bits range instead, which would need undoing.
    """
    x = values.astype(np.float32)
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width == 1:  # LINEAR with width 1 is a threshold at c - 0.5
        return (x > center - 0.5).astype(np.float32)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _fmt(v: float) -> str:
    return f"{v:g}"


# --------------------------------------------------------------------------- Pillow images


def _load_pillow(data: bytes, fmt: str, plugin: str | None) -> Scan:
    """PNG/JPEG/... via Pillow, restricted to the sniffed plugin; pixels scaled by bit range."""
    from PIL import Image, ImageOps

    label = fmt.upper()
    notes: list[str] = []
    try:
        im = Image.open(io.BytesIO(data), formats=[plugin] if plugin else None)
    except Image.DecompressionBombError:
        raise ScanError(f"the image is too large; the limit is {MAX_PIXELS // 1_000_000} megapixels") from None
    except Exception:  # noqa: BLE001
        raise ScanError(f"corrupt or truncated {label} file") from None
    with im:
        width, height = im.size
        _check_size(height, width)
        try:
            frames = int(getattr(im, "n_frames", 1) or 1)
            im.seek(0)
            if fmt == "jpeg" and max(width, height) > MAX_SIDE_PX:
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: the full image is never in memory
                scale = MAX_SIDE_PX / max(width, height)
                im.draft(im.mode, (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
            im.load()
        except Exception:  # noqa: BLE001 - truncated / corrupt data surfaces here
            raise ScanError(f"corrupt or truncated {label} file") from None
        if frames > 1:
            notes.append(f"first of {frames} frames used")
        im = _reduce_pillow(im, width, height, notes)
        try:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        except Exception:  # noqa: BLE001
            orientation = 1
            notes.append("EXIF data unreadable; orientation not checked")
        if orientation in range(2, 9):
            try:
                im = ImageOps.exif_transpose(im)
                notes.append(f"EXIF orientation {orientation} applied")
            except Exception:  # noqa: BLE001
                notes.append(f"EXIF orientation {orientation} could not be applied")
        pixels, bits, windowing = _pillow_pixels(im, notes)
        pixels = _cap_side(pixels, notes)  # modes Pillow cannot reduce (I;16, 1, P) arrive here at full size
    rows, columns = (width, height) if orientation in (5, 6, 7, 8) else (height, width)  # the file's size, oriented
    meta = ScanMetadata(
        source_format=fmt, modality=None, view=None, photometric_interpretation=None, bits_stored=bits,
        pixel_spacing_mm=None, transfer_syntax=None, rows=int(rows), columns=int(columns),
        frames=frames, windowing=windowing, inverted=False, notes=tuple(notes),
    )
    return Scan(pixels=pixels, metadata=meta)


_PILLOW_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "RGBa", "I", "F", "CMYK", "YCbCr"})


def _reduce_factor(height: int, width: int) -> int:
    return max(1, math.ceil(max(height, width) / MAX_SIDE_PX))


def _downsample_note(width: int, height: int, new_width: int, new_height: int, how: str) -> str:
    return (f"downsampled from {width}x{height} to {new_width}x{new_height} ({how}; "
            f"long side limit {MAX_SIDE_PX} px)")


def _reduce_pillow(im: Any, width: int, height: int, notes: list[str]) -> Any:
    """Box-average a loaded Pillow image by an integer factor so that its long side is <= MAX_SIDE_PX."""
    drafted = im.size != (width, height)
    k = _reduce_factor(im.size[1], im.size[0])
    if k > 1 and im.mode not in _PILLOW_REDUCIBLE:
        if im.mode.startswith("I;16"):
            im = im.convert("I")  # same values, a mode Pillow can reduce (handled like I;16 afterwards)
        elif im.mode == "1":
            im = im.convert("L")
            notes.append("1-bit (black and white) image read as 8-bit")
        elif im.mode in ("P", "PA"):
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
            notes.append("palette image converted to grayscale")
    reduced = k > 1 and im.mode in _PILLOW_REDUCIBLE
    if reduced:
        im = im.reduce(k)
    if drafted or reduced:
        how = " and ".join(h for h, done in (("JPEG DCT scaling", drafted), ("area average", reduced)) if done)
        notes.append(_downsample_note(width, height, im.size[0], im.size[1], how))
    return im


def _block_reduce(arr: np.ndarray, k: int, *, nearest: bool = False) -> np.ndarray:
    """Downsample the first two axes of ``arr`` by ``k``: block mean (float32) or, with ``nearest``, every k-th pixel.

    Edges that do not fill a whole block are averaged over the pixels they have; memory is bounded by working in
    strips of rows (no full-size float copy).
    """
    if k <= 1:
        return arr
    if nearest:
        return np.ascontiguousarray(arr[::k, ::k])
    h, w = arr.shape[:2]
    oh, ow = -(-h // k), -(-w // k)
    out = np.empty((oh, ow) + arr.shape[2:], dtype=np.float32)
    strip = max(1, 256 // k) * k
    col_starts = np.arange(0, w, k)
    counts_w = np.minimum(k, w - col_starts).astype(np.float32)
    for r0 in range(0, h, strip):
        block = arr[r0:r0 + strip].astype(np.float32)
        rows_sum = np.add.reduceat(block, np.arange(0, block.shape[0], k), axis=0)
        counts_h = np.minimum(k, block.shape[0] - np.arange(0, block.shape[0], k)).astype(np.float32)
        sums = np.add.reduceat(rows_sum, col_starts, axis=1)
        shape = (-1, 1) + (1,) * (arr.ndim - 2)
        out[r0 // k:r0 // k + sums.shape[0]] = sums / counts_h.reshape(shape) / counts_w.reshape((1, -1) + (1,) * (arr.ndim - 2))
    return out


def _cap_side(pixels: np.ndarray, notes: list[str], *, nearest: bool = False) -> np.ndarray:
    """Area-average ``[H, W(, C)]`` pixels so that the long side is <= MAX_SIDE_PX (noted)."""
    h, w = pixels.shape[:2]
    k = _reduce_factor(h, w)
    if k == 1:
        return pixels
    out = _block_reduce(pixels, k, nearest=nearest)
    notes.append(_downsample_note(w, h, out.shape[1], out.shape[0], "nearest pixel" if nearest else "area average"))
    return out.astype(pixels.dtype, copy=False) if pixels.dtype.kind == "f" else out


def _pillow_pixels(im: Any, notes: list[str]) -> tuple[np.ndarray, int | None, str]:
    """Convert a loaded Pillow image to [H, W] float32 in [0, 1]; returns (pixels, bits, windowing)."""
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
        notes.append("palette image converted to grayscale")
        mode = im.mode
    if mode == "LA":
        im = im.getchannel("L")
        notes.append("alpha channel dropped")
        mode = "L"
    if mode in ("RGBA", "RGBa"):
        # Alpha in radiographs comes from screenshots/exports; compositing would darken real anatomy.
        notes.append("alpha channel dropped")
    if mode in ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
        if mode != "RGB":
            notes.append(f"{mode} converted to RGB")
        notes.append("RGB converted to grayscale (ITU-R BT.601 luma)")
        gray = _luma(rgb)
        _check_not_blank(gray)
        return np.clip(gray / 255.0, 0.0, 1.0).astype(np.float32), 8, "none (8-bit display values)"
    if mode == "1":
        arr = np.asarray(im, dtype=np.float32)
        _check_not_blank(arr)
        notes.append("1-bit (black and white) image")
        return arr, 1, "none (1-bit image)"
    if mode == "L":
        arr = np.asarray(im)
        _check_not_blank(arr)
        return (arr.astype(np.float32) / 255.0), 8, "none (8-bit display values)"
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.int64)
        _check_not_blank(arr)
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 0xFFFF:
            bits = next(b for b in (8, 10, 12, 14, 16) if hi < (1 << b))
            if bits < 16:
                notes.append(f"16-bit image uses only {bits} bits; scaled by 1/{(1 << bits) - 1}")
            return (arr.astype(np.float32) / ((1 << bits) - 1)), bits, f"bit range 0-{(1 << bits) - 1}"
        out, windowing = _min_max(arr, None)
        notes.append("32-bit integer image outside the 16-bit range; min-max scaled")
        return out, 32, windowing
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        _check_finite(arr)
        _check_not_blank(arr)
        out, windowing = _min_max(arr, None)
        notes.append("floating-point image; min-max scaled")
        return out, 32, windowing
    raise ScanError(f"unsupported image mode {mode}")


# --------------------------------------------------------------------------- DICOM: header


def _read_dicom(data: bytes, *, stop_before_pixels: bool = False) -> tuple[Dataset, list[str]]:
    """Parse a DICOM byte string (force=True), making sure a transfer syntax is known."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    notes: list[str] = []
    if data.startswith(b"DICM"):  # meta header without the 128-byte preamble: pydicom needs one
        data = bytes(128) + data
        notes.append("no DICOM preamble")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
    except Exception:  # noqa: BLE001
        raise ScanError("corrupt or truncated DICOM file (the header could not be parsed)") from None
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


def _pixel_spacing(ds: Dataset, notes: list[str]) -> tuple[float, float] | None:
    spacing = _floats(_attr(ds, 0, "PixelSpacing", "PixelMeasuresSequence"), 2)
    if spacing is None:
        spacing = _floats(ds.get("ImagerPixelSpacing"), 2)
        if spacing is not None:
            notes.append("pixel spacing from ImagerPixelSpacing (detector plane, not corrected for magnification)")
    if spacing is None or min(spacing) <= 0:
        return None
    return (spacing[0], spacing[1])


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


def _decode(ds: Dataset, header: _Header, index: int | None) -> np.ndarray:
    """Decode one frame (``index``) or all frames; YBR is converted to RGB by pydicom.

    The result must match the header: [H, W(, 3)] for one frame, [F, H, W(, 3)] for all frames.
    """
    from pydicom.pixels import pixel_array

    expected: tuple[int, ...] = (header.rows, header.columns) + ((3,) if header.samples == 3 else ())
    if index is None and header.frames > 1:
        expected = (header.frames, *expected)
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


# --------------------------------------------------------------------------- DICOM: pixel values


def _padding_mask(stored: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Pixels equal to PixelPaddingValue (or within PixelPaddingRangeLimit), in stored values."""
    pad = _padding_int(ds, "PixelPaddingValue")
    if pad is None:
        return None
    limit = _padding_int(ds, "PixelPaddingRangeLimit")
    lo, hi = (pad, pad) if limit is None else (min(pad, limit), max(pad, limit))
    mask = (stored >= lo) & (stored <= hi)
    return mask if mask.any() else None


def _padding_int(ds: Dataset, keyword: str) -> int | None:
    """US/SS value that may arrive as raw bytes when the VR was ambiguous (implicit VR files)."""
    if keyword not in ds:
        return None
    value = ds[keyword].value
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 2:
            return None
        little = ds.file_meta.TransferSyntaxUID.is_little_endian
        return int.from_bytes(value, "little" if little else "big", signed=ds.get("PixelRepresentation") == 1)
    return _int(value)


def _modality_values(stored: np.ndarray, ds: Dataset, frame: int, notes: list[str]) -> np.ndarray:
    """Modality LUT: the Modality LUT Sequence, else RescaleSlope/Intercept (incl. functional groups)."""
    if stored.dtype.kind == "f":  # float pixel data has no modality LUT
        return stored.astype(np.float32)
    lut_seq = ds.get("ModalityLUTSequence")
    if lut_seq:
        try:
            lut, first = _lut_array(lut_seq[0], ds)
        except Exception:  # noqa: BLE001
            raise ScanError("invalid DICOM Modality LUT Sequence") from None
        if "Modality LUT Sequence applied" not in notes:
            notes.append("Modality LUT Sequence applied")
        return _apply_lut(stored, lut, first)
    slope = _floats(_attr(ds, frame, "RescaleSlope", "PixelValueTransformationSequence"), 1)
    intercept = _floats(_attr(ds, frame, "RescaleIntercept", "PixelValueTransformationSequence"), 1)
    values = stored.astype(np.float32)
    if slope is None and intercept is None:
        return values
    s, b = (slope or [1.0])[0], (intercept or [0.0])[0]
    if (s, b) != (1.0, 0.0):
        values = values * np.float32(s) + np.float32(b)
    return values


def _lut_array(item: Dataset, ds: Dataset) -> tuple[np.ndarray, int]:
    """(LUT entries, first mapped value) of a Modality/VOI LUT item; US, SS or OW LUT Data.

    Read here rather than through ``pydicom.pixels.apply_modality_lut`` / ``apply_voi``: pydicom 3.0
    builds dtype ``uint{bits}`` (fails for 12-bit LUTs) and indexes in the LUT's output dtype
    (wrapping for 8-bit LUTs with more than 256 entries).
    """
    descriptor = [int(v) for v in item.LUTDescriptor]
    entries, first = descriptor[0] or 65536, descriptor[1]
    elem = item["LUTData"]
    if isinstance(elem.value, (bytes, bytearray)):
        order = "<" if ds.file_meta.TransferSyntaxUID.is_little_endian else ">"
        lut = np.frombuffer(elem.value, dtype=f"{order}u2")[:entries]
    else:
        lut = np.asarray(_as_list(elem.value), dtype=np.float64)
    if lut.size < 2:
        raise ValueError("LUT too short")
    return lut.astype(np.float32), first


def _apply_lut(values: np.ndarray, lut: np.ndarray, first: int) -> np.ndarray:
    """Values below ``first`` map to the first entry, beyond the table to the last (PS3.3 C.11.1/C.11.2)."""
    idx = np.clip(np.rint(values.astype(np.float64)) - first, 0, lut.size - 1).astype(np.int64)
    return lut[idx]


def _voi(values: np.ndarray, valid: np.ndarray | None, ds: Dataset, frame: int,
         notes: list[str]) -> tuple[np.ndarray, str]:
    """VOI to [0, 1]: VOI LUT Sequence (its output range scaled to [0, 1]), else the first Window
    Center/Width, else robust min-max of the valid pixels."""
    voi_seq = ds.get("VOILUTSequence")
    if voi_seq:
        try:
            lut, first = _lut_array(voi_seq[0], ds)
            lo, hi = float(lut.min()), float(lut.max())
            if hi <= lo:
                raise ValueError("flat LUT")
        except Exception:  # noqa: BLE001
            notes.append("VOI LUT Sequence unusable; ignored")
        else:
            out = (_apply_lut(values, lut, first) - lo) / np.float32(hi - lo)
            label = "VOI LUT" + (f" (first of {len(voi_seq)})" if len(voi_seq) > 1 else "")
            if ds.get("WindowCenter") is not None:
                notes.append("VOI LUT Sequence used; Window Center/Width ignored")
            return _unless_flat(out, values, valid, label, notes)
    centers = _attr(ds, frame, "WindowCenter", "FrameVOILUTSequence")
    widths = _attr(ds, frame, "WindowWidth", "FrameVOILUTSequence")
    if centers is not None and widths is not None:
        center, width = _floats(centers, 1), _floats(widths, 1)
        function = str(_attr(ds, frame, "VOILUTFunction", "FrameVOILUTSequence") or "LINEAR").strip().upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            notes.append("unknown VOI LUT Function; LINEAR used")
            function = "LINEAR"
        if center is None or width is None or width[0] < (1 if function == "LINEAR" else 1e-6):
            notes.append("invalid Window Center/Width; min-max used")
        else:
            c, w = center[0], width[0]
            count = len(_as_list(centers))
            label = f"window C={_fmt(c)} W={_fmt(w)}" + ("" if function == "LINEAR" else f" {function}")
            if count > 1:
                notes.append(f"{count} window presets in the file; the first (C={_fmt(c)} W={_fmt(w)}) was used")
            return _unless_flat(_window(values, c, w, function), values, valid, label, notes)
    return _min_max(values, valid)


def _unless_flat(out: np.ndarray, values: np.ndarray, valid: np.ndarray | None, label: str,
                 notes: list[str]) -> tuple[np.ndarray, str]:
    """Fall back to min-max when the file's VOI would show a uniform image (avoid a silent blank)."""
    sample = out if valid is None else out[valid]
    if sample.size and float(sample.max()) - float(sample.min()) < 1e-6:
        notes.append(f"the file's {label} shows a uniform image; min-max used instead")
        return _min_max(values, valid)
    return out.astype(np.float32, copy=False), label


def _inversion(ds: Dataset, header: _Header, notes: list[str]) -> bool:
    """MONOCHROME1 (or MONOCHROME2 with an INVERSE presentation LUT) is displayed inverted."""
    shape = str(ds.get("PresentationLUTShape") or "").strip().upper()
    if header.photometric == "MONOCHROME1":
        notes.append("MONOCHROME1 inverted to MONOCHROME2 (bright = dense)")
        return True
    if header.photometric in ("MONOCHROME2", None) and shape == "INVERSE":
        notes.append("INVERSE presentation LUT applied")
        return True
    return False


# --------------------------------------------------------------------------- DICOM: loaders


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
    if header.modality is not None and header.modality not in _RADIOGRAPH_MODALITIES:
        notes.append(f"modality {header.modality} is not a chest radiograph modality")
    if header.frames > 1:
        notes.append(f"multi-frame file: first of {header.frames} frames used")
    stored = _cap_stored(_decode(ds, header, 0 if header.frames > 1 else None), ds, notes)
    pixels, windowing, inverted = _radiograph_pixels(stored, ds, header, notes)
    return Scan(pixels=pixels, metadata=_dicom_metadata(ds, header, header.frames, windowing, inverted, notes))


def _cap_stored(stored: np.ndarray, ds: Dataset, notes: list[str]) -> np.ndarray:
    """Downsample decoded stored values ``[H, W(, 3)]`` so the long side is <= MAX_SIDE_PX, keeping their dtype.

    Block mean rounded to the stored integer type (modality/VOI LUTs then apply as usual); every k-th pixel when the
    file declares padding values, so that padding stays exactly recognisable.
    """
    h, w = stored.shape[:2]
    k = _reduce_factor(h, w)
    if k == 1:
        return stored
    nearest = "PixelPaddingValue" in ds
    out = _block_reduce(stored, k, nearest=nearest)
    if stored.dtype.kind in "iub" and out.dtype != stored.dtype:
        out = np.rint(out).astype(stored.dtype)
    notes.append(_downsample_note(w, h, out.shape[1], out.shape[0], "nearest pixel" if nearest else "area average"))
    return out


def _radiograph_pixels(stored: np.ndarray, ds: Dataset, header: _Header,
                       notes: list[str]) -> tuple[np.ndarray, str, bool]:
    """Stored values -> modality -> VOI -> MONOCHROME2 sense, padding black."""
    _check_finite(stored)
    padding = _padding_mask(stored, ds)
    valid = None if padding is None else ~padding
    values = _modality_values(stored, ds, 0, notes)
    _check_finite(values)
    _check_not_blank(values, valid)
    out, windowing = _voi(values, valid, ds, 0, notes)
    inverted = _inversion(ds, header, notes)
    if inverted:
        out = 1.0 - out
    if padding is not None:
        out[padding] = 0.0
        notes.append(f"{int(padding.sum())} padding pixels excluded and set to black")
    return np.ascontiguousarray(out, dtype=np.float32), windowing, inverted


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


def _has_plane_positions(ds: Dataset, frames: int) -> bool:
    """Enhanced multi-frame files with per-frame plane positions are volumes whatever the modality."""
    return frames > 1 and _fg_item(ds, 1, "PlanePositionSequence") is not None


def _dicom_volume(ds: Dataset, header: _Header, notes: list[str]) -> Scan:
    """CT/MR/PT/NM file (one slice or an enhanced multi-frame) -> volume + display window."""
    stored = _decode(ds, header, None)
    if header.frames == 1:
        stored = stored[None]
    slices = [_Slice(stored[i], ds, i, notes) for i in range(stored.shape[0])]
    return _volume_scan(slices, ds, header, notes)


class _Slice:
    """One slice: modality values, padding mask and its position along the slice normal."""

    def __init__(self, stored: np.ndarray, ds: Dataset, frame: int, notes: list[str]) -> None:
        stored = _cap_stored(stored, ds, notes)
        _check_finite(stored)
        self.padding = _padding_mask(stored, ds)
        self.values = _modality_values(stored, ds, frame, notes)
        _check_finite(self.values)
        self.position = _floats(_attr(ds, frame, "ImagePositionPatient", "PlanePositionSequence"), 3)
        self.orientation = _floats(_attr(ds, frame, "ImageOrientationPatient", "PlaneOrientationSequence"), 6)
        number = ds.get("InstanceNumber") if frame == 0 and "PerFrameFunctionalGroupsSequence" not in ds else None
        self.instance = _floats(number, 1)


def _sort_slices(slices: list[_Slice], notes: list[str]) -> list[_Slice]:
    """Sort along the slice normal (ImagePositionPatient . (row x col)); else InstanceNumber."""
    if len(slices) == 1:
        return slices
    ref = slices[0].orientation
    if ref is not None and all(s.position is not None for s in slices):
        normal = np.cross(np.asarray(ref[:3]), np.asarray(ref[3:]))
        if np.linalg.norm(normal) > 1e-6:
            normal /= np.linalg.norm(normal)
            if any(s.orientation is None or not np.allclose(s.orientation, ref, atol=1e-3) for s in slices):
                notes.append("slices have different orientations; sorted along the first slice's normal")
            keyed = sorted(slices, key=lambda s: float(np.dot(s.position, normal)))  # type: ignore[arg-type]
            gaps = np.diff([float(np.dot(s.position, normal)) for s in keyed])  # type: ignore[arg-type]
            spacing_mm = float(np.median(gaps))
            notes.append(f"{len(slices)} slices sorted by ImagePositionPatient; spacing {_fmt(round(spacing_mm, 3))} mm")
            if (gaps < 1e-3).any():
                notes.append("duplicate slice positions")
            elif gaps.max() - gaps.min() > 0.1 * max(spacing_mm, 1e-6):
                notes.append("uneven slice spacing")
            return keyed
    if all(s.instance is not None for s in slices):
        notes.append(f"{len(slices)} slices sorted by InstanceNumber (no usable ImagePositionPatient)")
        return sorted(slices, key=lambda s: s.instance[0])  # type: ignore[index]
    notes.append(f"{len(slices)} slices kept in the given order (no position or instance number)")
    return slices


def _volume_scan(slices: list[_Slice], ref: Dataset, header: _Header, notes: list[str]) -> Scan:
    """Stack sorted slices into a volume in modality units and window it for display."""
    slices = _sort_slices(slices, notes)
    volume = np.stack([s.values for s in slices]).astype(np.float32)  # [D, H, W]
    padding = None
    if any(s.padding is not None for s in slices):
        padding = np.stack([s.padding if s.padding is not None else np.zeros(s.values.shape, bool) for s in slices])
    valid = None if padding is None else ~padding
    _check_not_blank(volume, valid)
    modality = header.modality
    if modality == "CT":
        center, width = CT_DISPLAY_WINDOW
        display = _window(volume, center, width)
        windowing = f"CT chest window C={_fmt(center)} W={_fmt(width)} HU"
        notes.append("CT image, not a radiograph: volume in HU, shown with a wide chest window")
    else:
        display, windowing = _voi(volume, valid, ref, 0, notes)
        notes.append(f"{modality or 'cross-sectional'} image, not a radiograph: volume in modality units")
    inverted = _inversion(ref, header, notes)
    if inverted:
        display = 1.0 - display
    if padding is not None:
        display[padding] = 0.0
        volume[padding] = float(volume[valid].min())
        notes.append(f"{int(padding.sum())} padding voxels excluded (black; volume set to its minimum)")
    display = np.ascontiguousarray(display, dtype=np.float32)
    depth = volume.shape[0]
    if header.frames > 1:
        notes.append(f"multi-frame file treated as a volume of {depth} slices")
    meta = _dicom_metadata(ref, header, depth, windowing, inverted, notes)
    return Scan(pixels=display[depth // 2].copy(), metadata=meta, volume=volume, volume_pixels=display)


def _series_file(source: Any) -> tuple[Dataset, _Header, str]:
    """Parse and validate one slice of a series: (dataset, header, SeriesInstanceUID)."""
    data = _read_source(source)[0]
    if _sniff(data)[0] != "dicom":
        raise ScanError("not a DICOM file; a series needs DICOM slices")
    ds, file_notes = _read_dicom(data)
    header = _dicom_header(ds, file_notes)
    if header.frames != 1 or header.samples != 1 or header.photometric == "PALETTE COLOR":
        raise ScanError("only single-frame grayscale slices can form a series")
    return ds, header, str(ds.get("SeriesInstanceUID") or "")


def _load_series(sources: list[Any]) -> Scan:
    """Validate every header first (same series, size, modality; total voxels), then decode and sort."""
    if not sources:
        raise ScanError("no files were given")
    total = len(sources)
    parsed = [_numbered(i, total, lambda s=s: _corrupt_dicom_guard(lambda: _series_file(s)))
              for i, s in enumerate(sources)]
    ref_ds, ref_header, ref_uid = parsed[0]
    if ref_header.modality not in _VOLUME_MODALITIES:
        raise ScanError("a series must be CT, MR, PT or NM slices")
    for i, (_, header, uid) in enumerate(parsed[1:], start=2):
        if uid != ref_uid:
            raise ScanError(f"file {i} of {total}: belongs to a different series")
        if (header.rows, header.columns) != (ref_header.rows, ref_header.columns):
            raise ScanError(f"file {i} of {total}: slice size differs from the first slice")
        if header.modality != ref_header.modality:
            raise ScanError(f"file {i} of {total}: modality differs from the first slice")
    if total * ref_header.rows * ref_header.columns > MAX_PIXELS:
        raise ScanError(f"the series is too large; the limit is {MAX_PIXELS // 1_000_000} million voxels")
    notes: list[str] = []
    slices = [_numbered(i, total, lambda ds=ds, header=header: _corrupt_dicom_guard(
        lambda: _Slice(_decode(ds, header, None), ds, 0, notes))) for i, (ds, header, _) in enumerate(parsed)]
    return _volume_scan(slices, ref_ds, ref_header, notes)


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
