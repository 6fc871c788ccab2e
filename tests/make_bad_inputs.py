"""A corpus of hostile or odd inputs (scans and notes) for the robustness tests, generated on the fly.

Why generated: no binary fixtures in the repo, every case documents how it was built, and the same corpus can be
written to a folder for manual poking at the app or the CLI:

    .venv/bin/python -m tests.make_bad_inputs /tmp/bad_inputs     # writes the files and prints a summary

Each ``BadInput`` says what a correct pipeline must do with it: ``"error"`` (a ``ScanError``/``InputError`` whose
one-line message matches ``match``) or ``"ok"`` (a normal ``Prediction``; ``match`` then searches the scan notes).
"""

from __future__ import annotations

import io
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

H, W = 64, 80  # small but above medmm.io.MIN_SIDE_PX; non-square


@dataclass(frozen=True)
class BadInput:
    """One corpus file and the expected outcome."""

    name: str          # file name written (its extension is part of the case)
    expect: str        # "error" | "ok"
    match: str         # regex: the error message (expect="error"), or for "ok" "<source_format> | <scan notes>"
    why: str           # what the case exercises

    def path(self, folder: Path) -> Path:
        return folder / self.name


@dataclass(frozen=True)
class BadNotes:
    """Notes text and what a correct pipeline must do with it, alone and beside a valid scan."""

    name: str
    text: str
    alone: str          # "ok" | "error" (notes-only request)
    warning: str = ""   # regex expected among the prediction warnings ("" = no requirement)


# ============================================================================================ builders
def phantom(h: int = H, w: int = W, maxv: int = 4095) -> np.ndarray:
    """uint16 chest film (a shipped example: the input gate accepts it) with a bright corner: orientation visible."""
    from tests.helpers import chest_film

    img = (chest_film(0, h, w) * 0.8 * maxv).round().astype(np.uint16)
    img[:8, :8] = maxv
    return img


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def tiff_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="TIFF")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG signature + IHDR that claims ``width x height`` 8-bit grey, with a tiny IDAT (a decompression
    bomb's header: decoding it would need 10 GB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")


def dicom_dataset(arr: np.ndarray | None = None, *, photometric: str = "MONOCHROME2", **attrs: object):
    """A minimal DX dataset (explicit VR little endian); ``attrs`` set after the pixel data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientName = "ROBUSTNESS^TEST"
    if arr is not None:
        bits = 8 if arr.dtype == np.uint8 else 12 if arr.dtype == np.uint16 else arr.dtype.itemsize * 8
        ds.set_pixel_data(arr, photometric, bits)
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def dicom_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def float_dicom_bytes(values: np.ndarray) -> bytes:
    """Float Pixel Data (7FE0,0008) DICOM (32-bit float, e.g. a parametric map)."""
    ds = dicom_dataset(None)
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 32
    ds.FloatPixelData = values.astype("<f4").tobytes()
    return dicom_bytes(ds)


def ybr_full_dicom_bytes() -> bytes:
    from pydicom.pixels import convert_color_space

    rgb = _tinted_chest()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    return dicom_bytes(dicom_dataset(ybr, photometric="YBR_FULL"))


def _tinted_chest() -> np.ndarray:
    """A chest film stored as slightly tinted RGB (a scanned or screenshot film), bright corner for orientation."""
    from tests.helpers import chest_film

    gray = chest_film(1, H, W) * 220 + 20
    rgb = np.stack([gray, gray * 0.97, gray * 0.92], -1).round().astype(np.uint8)
    rgb[:8, :8] = 255
    return rgb


def rgb_dicom_bytes() -> bytes:
    return dicom_bytes(dicom_dataset(_tinted_chest(), photometric="RGB"))


def syntax_dicom_bytes(uid: str) -> bytes:
    """An encapsulated (compressed-looking) DICOM whose transfer syntax is ``uid``, with junk fragments."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    ds = dicom_dataset(phantom().astype(np.uint16))
    ds.file_meta.TransferSyntaxUID = UID(uid)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(200)])  # an MPEG sequence header start + zeros
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buf = io.BytesIO()
    # a private/unknown syntax needs the encoding spelled out: explicit VR little endian, like its dataset
    ds.save_as(buf, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def huge_dicom_bytes(side: int = 60_000) -> bytes:
    """Header says ``side x side`` (3.6 gigapixels); the pixel data is 16 bytes (must be refused from the header)."""
    ds = dicom_dataset(phantom())
    ds.Rows = ds.Columns = side
    ds.PixelData = bytes(16)
    return dicom_bytes(ds)


def jpeg_dicom_bytes(arr: np.ndarray | None = None, *, jpeg: bytes | None = None, rows: int | None = None,
                     columns: int | None = None) -> bytes:
    """A JPEG Baseline (Process 1) DICOM: 8-bit grey ``arr`` (default a 256 x 200 chest film) encoded by Pillow, or
    the given ``jpeg`` codestream; the header's Rows/Columns are ``arr``'s unless ``rows``/``columns`` say otherwise."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    if arr is None:
        arr = (phantom(256, 200) // 16).astype(np.uint8)
    ds = dicom_dataset(arr.astype(np.uint8))
    if jpeg is None:
        jpeg = jpeg_bytes(arr.astype(np.uint8))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.Rows = rows if rows is not None else arr.shape[0]
    ds.Columns = columns if columns is not None else arr.shape[1]
    ds.LossyImageCompression = "01"
    return dicom_bytes(ds)


def patch_jpeg_sof(jpeg: bytes, rows: int, columns: int) -> bytes:
    """``jpeg`` with its frame header (SOF0) claiming ``columns x rows``: the scan data is left as it is."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + struct.pack(">HH", rows, columns) + jpeg[at + 9:]


def sof_bomb_dicom_bytes(side: int = 40_000) -> bytes:
    """Issue 29: a 3 KB JPEG Baseline DICOM, header 256 x 200, whose embedded JPEG's SOF says ``side x side``."""
    arr = (phantom(256, 200) // 16).astype(np.uint8)
    return jpeg_dicom_bytes(arr, jpeg=patch_jpeg_sof(jpeg_bytes(arr), side, side))


def big_embedded_jpeg_dicom_bytes(side: int = 7000) -> bytes:
    """Issue 29: a real ``side x side`` JPEG inside a DICOM whose header says 256 x 200."""
    from PIL import Image

    small = (phantom(256, 200) // 16).astype(np.uint8)
    big = np.asarray(Image.fromarray(small).resize((side, side), Image.BILINEAR))
    return jpeg_dicom_bytes(small, jpeg=jpeg_bytes(big))


def truncated_jpeg_dicom_bytes(keep: float = 1 / 3) -> bytes:
    """Issue 29: a JPEG Baseline DICOM whose single fragment is cut to ``keep`` of its length (even, no EOI)."""
    arr = (phantom(256, 200) // 16).astype(np.uint8)
    jpeg = jpeg_bytes(arr)
    cut = int(len(jpeg) * keep) // 2 * 2
    return jpeg_dicom_bytes(arr, jpeg=jpeg[:cut])


def deflate_bomb_dicom_bytes(inflated: int = 2 * 1024**3, block: int = 16 * 1024 * 1024) -> bytes:
    """Issue 29: a Deflated Explicit VR Little Endian DICOM (a normal small film) with a private OB element of
    ``inflated`` zero bytes after the pixel data: ~1 KB per MB inflated (2 GB from a ~2 MB file).

    Built without ever holding the zeros: one ``block`` of zeros is deflated once after a full flush (which resets
    the compressor's history), and that same compressed block is repeated; the stream stays valid deflate."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = dicom_dataset(phantom())
    plain = io.BytesIO()
    ds.save_as(plain, implicit_vr=False, little_endian=True)           # the dataset alone, no meta
    creator = b"MEDMM BOMB"
    head = plain.getvalue() + struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", len(creator)) + creator
    head += struct.pack("<HH2sHI", 0x7FE1, 0x1000, b"OB", 0, inflated)
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)]
    zeros = comp.compress(bytes(block)) + comp.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(inflated, block)
    parts.append(zeros * count)
    parts.append(comp.compress(bytes(rest)))
    parts.append(comp.flush())
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    return bytes(128) + b"DICM" + meta.getvalue() + b"".join(parts)


def deflated_dicom_bytes() -> bytes:
    """A normal small film as Deflated Explicit VR Little Endian (pydicom deflates the dataset on write)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = dicom_dataset(phantom())
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return dicom_bytes(ds)


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("scan.png", png_bytes(phantom().astype(np.uint8)))
    return buf.getvalue()


# ============================================================================================ the corpus
SCANS: tuple[BadInput, ...] = (
    BadInput("zero_byte.png", "error", r"empty", "zero-byte file"),
    BadInput("truncated.png", "error", r"corrupt or truncated PNG", "valid PNG cut in half"),
    BadInput("corrupt_crc.png", "error", r"corrupt|truncated", "PNG whose image data bytes are overwritten"),
    BadInput("truncated.jpg", "error", r"corrupt or truncated JPEG", "JPEG cut after a third"),
    BadInput("truncated.dcm", "error", r"corrupt or truncated DICOM", "DICOM cut in the pixel data"),
    BadInput("header_only.dcm", "error", r"DICOM|corrupt", "128-byte preamble + DICM + garbage"),
    BadInput("bomb_100k.png", "error", r"too large", "PNG header claiming 100,000 x 100,000 pixels"),
    BadInput("huge_60k.dcm", "error", r"too large", "DICOM with Rows = Columns = 60,000 and 16 bytes of pixels"),
    BadInput("png_named.dcm", "ok", r"^png\b", "a PNG with a .dcm extension (read by content)"),
    BadInput("dicom_named.png", "ok", r"^dicom\b", "a DICOM with a .png extension (read by content)"),
    BadInput("no_pixels.dcm", "error", r"no image \(no pixel data\)", "DICOM without Pixel Data"),
    BadInput("made_up_syntax.dcm", "error", r"unsupported DICOM transfer syntax", "transfer syntax UID 1.2.3.4.5.6.7.8.9"),
    BadInput("mpeg2.dcm", "error", r"unsupported DICOM transfer syntax", "MPEG2 Main Profile transfer syntax"),
    BadInput("rgb.dcm", "ok", r"RGB converted to grayscale", "RGB DICOM"),
    BadInput("ybr_full.dcm", "ok", r"YBR_FULL converted", "YBR_FULL DICOM"),
    BadInput("one_pixel.png", "error", r"too small", "1 x 1 PNG"),
    BadInput("one_pixel.dcm", "error", r"too small", "1 x 1 DICOM"),
    BadInput("blank.png", "error", r"blank image", "every pixel the same"),
    BadInput("nan_float.dcm", "error", r"NaN or infinite", "Float Pixel Data DICOM containing NaN"),
    BadInput("inf_float.tif", "error", r"NaN or infinite", "32-bit float TIFF containing +inf"),
    BadInput("float_ok.tif", "ok", r"floating-point image", "32-bit float TIFF, finite"),
    BadInput("notes.txt", "error", r"not an image: the file is text", "a text file"),
    BadInput("fake.pdf", "error", r"PDF", "a PDF header"),
    BadInput("archive.zip", "error", r"ZIP", "a ZIP archive holding a PNG"),
    BadInput("random.dcm", "error", r"unrecognised file format|corrupt", "4 KB of random bytes named .dcm"),
    BadInput("good.png", "ok", r"", "control case: a normal 8-bit PNG"),
    # issue 29: decode budgets inside DICOM (compressed frames, deflated datasets)
    BadInput("jpeg_sof_40000.dcm", "error", r"compressed image inside the DICOM file is too large \(40000x40000\)",
             "10 KB JPEG Baseline DICOM, header 256 x 200, embedded JPEG's SOF patched to 40000 x 40000 (was 7.6 GB)"),
    BadInput("jpeg_sof_20000.dcm", "error", r"compressed image inside the DICOM file is too large \(20000x20000\)",
             "the same with the SOF patched to 20000 x 20000 (was 1.85 GB)"),
    BadInput("jpeg_7000_in_256x200.dcm", "error", r"compressed image inside the DICOM file does not match its header",
             "a real 7000 x 7000 JPEG inside a DICOM whose header says 256 x 200"),
    BadInput("jpeg_fragment_truncated.dcm", "error", r"corrupt or truncated DICOM pixel data",
             "JPEG Baseline DICOM whose fragment is cut to a third (libjpeg decoded it as garbage, silently)"),
    BadInput("deflate_bomb_2gb.dcm", "error", r"deflated DICOM file inflates to more than",
             "2 MB Deflated Explicit VR DICOM with a private element of zeros inflating to 2 GB (was +4 GB)"),
    BadInput("jpeg_baseline_ok.dcm", "ok", r"^dicom\b", "control case: a normal JPEG Baseline DICOM"),
    BadInput("deflated_ok.dcm", "ok", r"^dicom\b", "control case: a normal Deflated Explicit VR DICOM"),
)

_BUILDERS = {
    "zero_byte.png": lambda: b"",
    "truncated.png": lambda: (lambda b: b[: len(b) // 2])(png_bytes(phantom())),
    "corrupt_crc.png": lambda: (lambda b: b[:60] + bytes(len(b) - 72) + b[-12:])(png_bytes(phantom())),
    "truncated.jpg": lambda: (lambda b: b[: len(b) // 3])(jpeg_bytes((phantom() // 16).astype(np.uint8))),
    "truncated.dcm": lambda: (lambda b: b[: len(b) - 3000])(dicom_bytes(dicom_dataset(phantom()))),
    "header_only.dcm": lambda: bytes(128) + b"DICM" + bytes(range(256)) * 4,
    "bomb_100k.png": lambda: png_bomb_bytes(),
    "huge_60k.dcm": lambda: huge_dicom_bytes(),
    "png_named.dcm": lambda: png_bytes((phantom() // 16).astype(np.uint8)),
    "dicom_named.png": lambda: dicom_bytes(dicom_dataset(phantom())),
    "no_pixels.dcm": lambda: dicom_bytes(dicom_dataset(None)),
    "made_up_syntax.dcm": lambda: syntax_dicom_bytes("1.2.3.4.5.6.7.8.9"),
    "mpeg2.dcm": lambda: syntax_dicom_bytes("1.2.840.10008.1.2.4.100"),
    "rgb.dcm": rgb_dicom_bytes,
    "ybr_full.dcm": ybr_full_dicom_bytes,
    "one_pixel.png": lambda: png_bytes(np.array([[128]], np.uint8)),
    "one_pixel.dcm": lambda: dicom_bytes(dicom_dataset(np.array([[128]], np.uint16))),
    "blank.png": lambda: png_bytes(np.full((H, W), 77, np.uint8)),
    "nan_float.dcm": lambda: float_dicom_bytes(np.where(phantom() > 3000, np.nan, phantom()).astype(np.float32)),
    "inf_float.tif": lambda: tiff_bytes(np.where(phantom() > 3000, np.inf, phantom()).astype(np.float32)),
    "float_ok.tif": lambda: tiff_bytes(phantom().astype(np.float32) / 4095),
    "notes.txt": lambda: ("Patient has a cough.\n" * 50).encode(),
    "fake.pdf": lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
    "archive.zip": zip_bytes,
    "random.dcm": lambda: np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "good.png": lambda: png_bytes((phantom() // 16).astype(np.uint8)),
    "jpeg_sof_40000.dcm": lambda: sof_bomb_dicom_bytes(40_000),
    "jpeg_sof_20000.dcm": lambda: sof_bomb_dicom_bytes(20_000),
    "jpeg_7000_in_256x200.dcm": lambda: big_embedded_jpeg_dicom_bytes(7000),
    "jpeg_fragment_truncated.dcm": truncated_jpeg_dicom_bytes,
    "deflate_bomb_2gb.dcm": deflate_bomb_dicom_bytes,
    "jpeg_baseline_ok.dcm": lambda: jpeg_dicom_bytes(),
    "deflated_ok.dcm": deflated_dicom_bytes,
}

NOTES: tuple[BadNotes, ...] = (
    BadNotes("one_megabyte", ("Cough and fever for three days. " * 40_000)[:1_000_000], "ok", r"cut to that length"),
    BadNotes("control_chars", "Fever\x00\x01\x07 and\x1b[31m cough\x7f;\r\n\tcrackles\x0c right base", "ok"),
    BadNotes("emoji", "Fever 🤒🤒 cough 😷 since Monday 👍🏽 family 👨‍👩‍👧", "ok"),
    BadNotes("chinese", "患者发热三天，咳嗽，右下肺湿啰音。排除肺炎。", "ok"),
    BadNotes("arabic", "المريض يعاني من الحمى والسعال منذ ثلاثة أيام. استبعاد الالتهاب الرئوي.", "ok"),
    BadNotes("mixed_rtl_bidi", "Fever \u202eesrever\u202c cough \u200b\u200d zero-width", "ok"),
    BadNotes("whitespace_only", " \t\n\r\u00a0\u2003\u3000 \n", "error"),
    BadNotes("single_char", ".", "ok"),
)


def write_corpus(folder: str | Path) -> list[tuple[BadInput, Path]]:
    """Write every scan case into ``folder`` (created); returns ``(case, path)`` pairs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for case in SCANS:
        path = case.path(folder)
        path.write_bytes(_BUILDERS[case.name]())
        out.append((case, path))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "bad_inputs")
    for case, path in write_corpus(folder):
        print(f"{path}  ({path.stat().st_size:,} B)  expect {case.expect}: {case.why}")
    notes_dir = folder / "notes"
    notes_dir.mkdir(exist_ok=True)
    for n in NOTES:
        (notes_dir / f"{n.name}.txt").write_text(n.text, encoding="utf-8")
    print(f"{len(NOTES)} notes files in {notes_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
