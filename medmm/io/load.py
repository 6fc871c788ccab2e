"""Reading, format sniffing and the public loaders: ``load_scan``, ``load_series``, ``load_scans``."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from medmm.io import limits
from medmm.io.dicom import _VOLUME_MODALITIES, _corrupt_dicom_guard, _decode, _load_dicom, _read_dicom
from medmm.io.dicom_header import _KNOWN_MODALITIES, _code, _dicom_header, _Header
from medmm.io.dicom_volume import _Slice, _volume_scan
from medmm.io.images import _load_pillow
from medmm.io.scan import _EXIT_EXCEPTIONS, Scan, ScanError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)


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


_T = TypeVar("_T")


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
    if total > limits.MAX_REQUEST_BYTES:
        raise ScanError(f"the files of this request are larger than {limits.MAX_REQUEST_BYTES // (1024 * 1024)} MB together")


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
        return  # one file: its own header check (limits.MAX_PIXELS) is stricter
    total = sum(header_pixels(b) for b in blobs)
    if total > limits.MAX_REQUEST_PIXELS:
        raise ScanError(f"the images of this request are too large together ({total / 1e6:.0f} megapixels); "
                        f"the limit is {limits.MAX_REQUEST_PIXELS // 1_000_000} megapixels per request")


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
            if size > limits.MAX_FILE_BYTES:
                raise ScanError(_too_big_file_message())
            with path.open("rb") as fh:
                data = fh.read(limits.MAX_FILE_BYTES + 1)
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
    if len(data) > limits.MAX_FILE_BYTES:
        raise ScanError(_too_big_file_message())
    return data, hint


def _too_big_file_message() -> str:
    return f"the file is larger than the {limits.MAX_FILE_BYTES // (1024 * 1024)} MB limit"


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
    if total * ref_header.rows * ref_header.columns > limits.MAX_PIXELS:
        raise ScanError(f"the series is too large; the limit is {limits.MAX_PIXELS // 1_000_000} million voxels")
    notes: list[str] = []
    slices = [_numbered(i, total, lambda ds=ds, header=header: _corrupt_dicom_guard(
        lambda: _Slice(_decode(ds, header, None), ds, 0, notes))) for i, (ds, header, _) in enumerate(parsed)]
    return _volume_scan(slices, ref_ds, ref_header, notes)
