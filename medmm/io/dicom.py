"""DICOM files: header, modality and VOI transforms, colour, multi-frame and volume (CT/MR/PT/NM) scans.

Only whitelisted, non-identifying header values reach ``ScanMetadata``; patient and study identifiers only as
salted per-process keys (``patient_key``/``study_key``) so that scans of one request can be compared.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import logging
import math
import secrets
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from medmm.io import limits
from medmm.io.limits import _check_size
from medmm.io.pixels import (_block_reduce, _check_finite, _check_not_blank, _downsample_note, _fmt, _luma, _min_max,
                             _reduce_factor, _window)
from medmm.io.scan import _EXIT_EXCEPTIONS, Scan, ScanError, ScanMetadata

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

CT_DISPLAY_WINDOW = (-400.0, 1500.0)
"""(centre, width) in HU for CT display: lung parenchyma to soft tissue (-1150..350 HU)."""
_VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
# DICOM modalities a plain radiograph arrives as (DR and RG are retired terms; OT / SC: digitised or exported films).
# The one definition: the loader notes other 2-D modalities, the pipeline warns about them.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT", "SC"})


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


_DEFLATED_UID = b"1.2.840.10008.1.2.1.99"
_INFLATE_STEP = 4 * 1024 * 1024


def _inflated(data: bytes) -> bytearray | None:
    """A Deflated Explicit VR Little Endian file (``data`` has its preamble) as the equivalent Explicit VR Little
    Endian file, inflated through a capped stream; None for any other file.

    pydicom inflates such a dataset with one ``zlib.decompress`` call: a 2 MB file of zeros becomes 2 GB before
    anything can look at it. Here the dataset grows ``_INFLATE_STEP`` at a time and is refused as soon as it passes
    ``limits.MAX_INFLATED_BYTES``.
    """
    if data[128:132] != b"DICM" or _DEFLATED_UID not in data[132:65536]:
        return None
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    fp = io.BytesIO(data)
    fp.seek(132)
    try:
        meta = _read_file_meta_info(fp)
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return None
        start = fp.tell()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if "FileMetaInformationGroupLength" in meta:
            del meta.FileMetaInformationGroupLength
        head = DicomBytesIO()
        head.is_little_endian, head.is_implicit_VR = True, False
        write_file_meta_info(head, meta, enforce_standard=False)
    except Exception:  # noqa: BLE001
        raise ScanError("corrupt or truncated DICOM file (the header could not be parsed)") from None
    out = bytearray(bytes(128) + b"DICM" + head.getvalue())
    budget = limits.MAX_INFLATED_BYTES + len(out)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    tail: bytes | memoryview = memoryview(data)[start:]
    try:
        while True:
            piece = inflater.decompress(tail, _INFLATE_STEP)
            out += piece
            if len(out) > budget:
                raise ScanError(f"the deflated DICOM file inflates to more than the "
                                f"{limits.MAX_INFLATED_BYTES // (1024 * 1024)} MB limit")
            tail = inflater.unconsumed_tail
            if inflater.eof or (not tail and len(piece) < _INFLATE_STEP):
                break
    except zlib.error:
        raise ScanError("corrupt DICOM file (the deflated dataset could not be inflated)") from None
    if not inflater.eof:
        raise ScanError("corrupt or truncated DICOM file (the deflated dataset ends early)")
    return out


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


# ------------------------------------------------------------------ compressed frames, checked before decoding
# A decoder sizes its output from the codestream's own frame header, not from the DICOM header: a 10 KB file whose
# JPEG claims 40000 x 40000 made libjpeg allocate 7.6 GB. So every frame to be decoded is opened first, its frame
# header read (JPEG SOFn, JPEG-LS SOF55, JPEG 2000 SIZ, RLE header), held to the pixel budget and to the DICOM
# header, and a frame that stops before its end marker is refused (libjpeg decodes a cut frame as garbage silently).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF,
                       0xF7})  # SOF0-15 without DHT (C4), JPG (C8), DAC (CC); F7: JPEG-LS SOF55
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
_END_MARKER_WINDOW = 64  # bytes at a frame's end searched for EOI/EOC (trailing padding is tolerated)
_TRUNCATED_FRAME = "corrupt or truncated DICOM pixel data (a compressed frame ends before its end marker)"


@dataclass(frozen=True)
class _FrameHeader:
    rows: int
    columns: int
    components: int


def _codestream_kind(uid: Any) -> str | None:
    """"jpeg" (JPEG and JPEG-LS), "j2k" (JPEG 2000 and HTJ2K), "rle", or None for native (uncompressed) data."""
    from pydicom import uid as uids

    if not uid.is_compressed or uid == uids.DeflatedExplicitVRLittleEndian:
        return None
    if uid in uids.JPEGTransferSyntaxes or uid in uids.JPEGLSTransferSyntaxes:
        return "jpeg"
    if uid in uids.JPEG2000TransferSyntaxes:
        return "j2k"
    if uid in uids.RLETransferSyntaxes:
        return "rle"
    return "other"


def _encoded_frames(ds: Dataset, header: _Header, index: int | None) -> list[bytes]:
    """The encoded frames ``pixel_array(ds, index=index)`` decodes: frame ``index``, or the header's frame count."""
    from pydicom.encaps import generate_frames, get_frame

    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        if index is not None:
            return [get_frame(ds.PixelData, index, number_of_frames=header.frames, extended_offsets=extended)]
        frames = []
        for frame in generate_frames(ds.PixelData, number_of_frames=header.frames, extended_offsets=extended):
            frames.append(frame)
            if len(frames) == header.frames:
                break
    except ScanError:
        raise
    except Exception:  # noqa: BLE001
        raise ScanError("corrupt or truncated DICOM pixel data (the compressed frames could not be read)") from None
    if len(frames) < header.frames:
        raise ScanError(f"the DICOM file holds fewer image frames ({len(frames)}) than its header says "
                        f"({header.frames})")
    return frames


def _check_codestreams(ds: Dataset, header: _Header, index: int | None) -> None:
    """Refuse, before any decoder runs, a compressed frame that is too large, does not match the DICOM header or
    is cut short. Native pixel data is sized by the header itself and passes untouched."""
    kind = _codestream_kind(ds.file_meta.TransferSyntaxUID)
    if kind is None or "PixelData" not in ds:
        return
    if kind == "other":  # a decoder we cannot size beforehand is not run
        raise ScanError(f"unsupported DICOM transfer syntax: {_transfer_syntax_name(ds) or 'unknown'}")
    bytes_per_sample = max(1, -(-_int(ds.get("BitsAllocated"), 8) // 8))  # type: ignore[operator]
    for frame in _encoded_frames(ds, header, index):
        if kind == "rle":
            _check_rle(frame, header.samples * bytes_per_sample)
            continue
        found = _jpeg_frame_header(frame) if kind == "jpeg" else _j2k_frame_header(frame)
        if found.rows * found.columns > limits.MAX_PIXELS:
            raise ScanError(f"the compressed image inside the DICOM file is too large ({found.columns}x{found.rows});"
                            f" the limit is {limits.MAX_PIXELS // 1_000_000} megapixels")
        if (found.rows, found.columns) != (header.rows, header.columns):
            raise ScanError(f"the compressed image inside the DICOM file does not match its header "
                            f"({found.columns}x{found.rows} in the image, {header.columns}x{header.rows} in the header)")
        if found.components != header.samples:
            raise ScanError(f"the compressed image inside the DICOM file does not match its header "
                            f"({found.components} colour components in the image, {header.samples} in the header)")
        if b"\xff\xd9" not in frame[-_END_MARKER_WINDOW:]:  # JPEG EOI = JPEG 2000 EOC
            raise ScanError(_TRUNCATED_FRAME)


def _jpeg_frame_header(frame: bytes) -> _FrameHeader:
    """Rows, columns and components from a JPEG / JPEG-LS frame header (SOFn / SOF55), walking marker segments."""
    if frame[:2] != b"\xff\xd8":
        raise ScanError("corrupt DICOM pixel data (a compressed frame is not a JPEG image)")
    i, n = 2, len(frame)
    while i + 4 <= n:
        if frame[i] != 0xFF:
            break
        marker = frame[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker in (0xDA, 0xD9):  # scan data or the end before any frame header
            break
        if marker in _JPEG_SOF:
            if i + 10 > n:
                raise ScanError(_TRUNCATED_FRAME)
            rows, columns = int.from_bytes(frame[i + 5:i + 7], "big"), int.from_bytes(frame[i + 7:i + 9], "big")
            return _FrameHeader(rows, columns, frame[i + 9])
        i += 2 + int.from_bytes(frame[i + 2:i + 4], "big")
    raise ScanError("corrupt DICOM pixel data (a compressed frame has no readable JPEG frame header)")


def _j2k_frame_header(frame: bytes) -> _FrameHeader:
    """Rows, columns and components from a JPEG 2000 codestream's SIZ segment (also inside a JP2 wrapper)."""
    at = 0 if frame[:4] == b"\xff\x4f\xff\x51" else frame.find(b"\xff\x4f\xff\x51", 0, 65536)
    if at < 0:
        raise ScanError("corrupt DICOM pixel data (a compressed frame is not a JPEG 2000 image)")
    siz = frame[at + 4:at + 4 + 38]
    if len(siz) < 38:
        raise ScanError(_TRUNCATED_FRAME)
    xsiz, ysiz, xo, yo = (int.from_bytes(siz[k:k + 4], "big") for k in (4, 8, 12, 16))
    return _FrameHeader(max(ysiz - yo, 0), max(xsiz - xo, 0), int.from_bytes(siz[36:38], "big"))


def _check_rle(frame: bytes, expected_segments: int) -> None:
    """An RLE frame's 64-byte header: one segment per sample byte, offsets inside the frame and increasing.

    RLE output is sized from the DICOM header (rows x columns per segment), so only the header needs checking."""
    if len(frame) < 64:
        raise ScanError(_TRUNCATED_FRAME)
    count = int.from_bytes(frame[:4], "little")
    offsets = [int.from_bytes(frame[4 + 4 * k:8 + 4 * k], "little") for k in range(min(count, 15))]
    if count != expected_segments or not offsets or offsets[0] != 64:
        raise ScanError("the compressed image inside the DICOM file does not match its header (RLE segments)")
    if any(b <= a for a, b in itertools.pairwise(offsets)) or offsets[-1] >= len(frame):
        raise ScanError(_TRUNCATED_FRAME)


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
