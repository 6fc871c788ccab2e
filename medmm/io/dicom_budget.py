"""DICOM decode budgets: what a file may make the decoders allocate, checked before they run.

* A Deflated Explicit VR Little Endian dataset inflates through a capped stream (``limits.MAX_INFLATED_BYTES``).
* Every compressed frame to be decoded (JPEG, JPEG-LS, JPEG 2000, RLE) has its own frame header read and held to
  ``limits.MAX_PIXELS`` and to the DICOM header; a frame cut before its end marker is refused.

The hostile files these guard against are built by ``tests/make_bad_inputs.py`` and measured by ``scripts/attack.py``.
"""

from __future__ import annotations

import io
import itertools
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medmm.io import limits
from medmm.io.dicom_header import _Header, _int, _transfer_syntax_name
from medmm.io.scan import ScanError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset


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
