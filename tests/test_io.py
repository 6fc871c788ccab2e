"""Tests for medmm.io: every case asserts pixel values, orientation or metadata, not just that it runs.

Synthetic DICOM files are built with pydicom from a phantom with a known orientation marker
(bright square top-left, black square bottom-right, a left-to-right ramp in between). Every
synthetic dataset carries fake identifiers ("SECRET...") so any leak into metadata or messages shows.
"""

from __future__ import annotations

import io
import logging
import random
import warnings
import zipfile
import zlib
from functools import lru_cache

import numpy as np
import pytest
from tests.helpers import require_shared
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

import medmm.io as mio
from medmm.io import CT_DISPLAY_WINDOW, Scan, ScanError, load_scan, load_scans, load_series

SECRET = "SECRET"
DX_SOP = UID("1.2.840.10008.5.1.4.1.1.1.1")  # Digital X-Ray Image Storage - For Presentation
CT_SOP = UID("1.2.840.10008.5.1.4.1.1.2")
H, W = 48, 64  # non-square so a transpose cannot pass


# --------------------------------------------------------------------------- builders


def phantom(maxv: int, lo: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """int64 [h, w]: ramp 20%..60% left to right, max square top-left, min square bottom-right."""
    ramp = np.linspace(lo + 0.2 * (maxv - lo), lo + 0.6 * (maxv - lo), w)
    img = np.round(np.tile(ramp, (h, 1))).astype(np.int64)
    img[:8, :8] = maxv
    img[-8:, -8:] = lo
    return img


def assert_marker(pixels: np.ndarray) -> None:
    """The phantom's orientation survived: bright top-left, black bottom-right, ramp rising rightwards."""
    assert pixels.shape == (H, W)
    assert pixels.dtype == np.float32
    assert pixels[:8, :8].min() > 0.98
    assert pixels[-8:, -8:].max() < 0.02
    row = pixels[H // 2, 8:-8]
    assert np.all(np.diff(row) >= 0) and row[-1] > row[0]


def make_ds(arr: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
            modality: str = "DX", sop: UID = DX_SOP, **attrs: object) -> Dataset:
    """A minimal image dataset with fake identifiers; ``attrs`` are set after the pixel data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.SOPClassUID = sop
    ds.Modality = modality
    ds.PatientName = "SECRET^NAME"
    ds.PatientID = "SECRET-ID-123"
    ds.PatientBirthDate = "19010101"
    ds.StudyDate = "20240229"
    ds.InstitutionName = "SECRET HOSPITAL"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    if bits_stored is None:
        bits_stored = arr.dtype.itemsize * 8
    ds.set_pixel_data(arr, photometric, bits_stored)
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def to_bytes(ds: Dataset, *, file_meta: bool = True) -> bytes:
    buf = io.BytesIO()
    if file_meta:
        ds.save_as(buf, enforce_file_format=True)
    else:  # raw implicit VR little endian dataset: no preamble, no DICM, no group 0002
        ds = ds.copy()
        del ds.file_meta
        ds.save_as(buf, implicit_vr=True, little_endian=True)
    return buf.getvalue()


def dicom_bytes(arr: np.ndarray, **kwargs: object) -> bytes:
    return to_bytes(make_ds(arr, **kwargs))


def png_bytes(arr: np.ndarray, **save: object) -> bytes:
    """PNG of ``arr``; Pillow picks the mode from the dtype/shape (uint16 -> I;16, [H, W, 2] -> LA)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **save)
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, **save)
    return buf.getvalue()


def lut_item(descriptor: list[int], data: np.ndarray, vr: str = "US") -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "US", descriptor)  # LUTDescriptor
    if vr == "US":
        item.add_new(0x00283006, "US", [int(v) for v in data])  # LUTData
    else:
        item.add_new(0x00283006, "OW", data.astype("<u2").tobytes())
    return item


def encode_jpeg_lossless_sv1(image: np.ndarray, precision: int) -> bytes:
    """Minimal JPEG Lossless (Process 14, selection value 1) encoder for one grayscale frame.

    No Python package ships an encoder for this transfer syntax (pylibjpeg-libjpeg only decodes),
    so the test writes the bitstream itself: one Huffman table with 5-bit codes for SSSS 0..16.
    """
    rows, cols = image.shape
    x = image.astype(np.int64)
    pred = np.empty_like(x)
    pred[:, 1:] = x[:, :-1]  # Ra (left neighbour)
    pred[1:, 0] = x[:-1, 0]  # first column predicts from above
    pred[0, 0] = 1 << (precision - 1)
    diff = (x - pred) % 65536
    diff = np.where(diff > 32768, diff - 65536, diff)
    out = bytearray()
    acc = nbits = 0

    def put(value: int, length: int) -> None:
        nonlocal acc, nbits
        acc = (acc << length) | (value & ((1 << length) - 1))
        nbits += length
        while nbits >= 8:
            nbits -= 8
            byte = (acc >> nbits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0)  # byte stuffing
        acc &= (1 << nbits) - 1

    for d in diff.ravel().tolist():
        ssss = 16 if d == 32768 else abs(d).bit_length()
        put(ssss, 5)
        if 0 < ssss < 16:
            put(d if d > 0 else d - 1, ssss)
    if nbits:
        put((1 << (8 - nbits)) - 1, 8 - nbits)

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    frame_header = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    sof3 = segment(0xC3, frame_header)
    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5
    dht = segment(0xC4, bytes([0x00]) + bytes(counts) + bytes(range(17)))
    sos = segment(0xDA, bytes([1, 1, 0x00, 1, 0, 0]))  # predictor 1, point transform 0
    return b"\xff\xd8" + sof3 + dht + sos + bytes(out) + b"\xff\xd9"


def with_encapsulated(ds: Dataset, frames: list[bytes], transfer_syntax: str) -> Dataset:
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def assert_no_secret(text: str) -> None:
    assert SECRET not in text.upper(), text
    assert "19010101" not in text and "20240229" not in text, text


def expect_error(source: object, match: str, **kwargs: object) -> ScanError:
    with pytest.raises(ScanError, match=match) as info:
        load_scan(source, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and message
    assert_no_secret(message)
    return info.value


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Independent PS3.3 C.11.2.1.2.1 LINEAR window, mapped to [0, 1]."""
    v = values.astype(np.float64)
    out = ((v - (center - 0.5)) / (width - 1) + 0.5)
    out[v <= center - 0.5 - (width - 1) / 2] = 0.0
    out[v > center - 0.5 + (width - 1) / 2] = 1.0
    return out


def robust_stretch(values: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(values.astype(np.float64), [0.5, 99.5])
    return np.clip((values - lo) / (hi - lo), 0, 1)


# --------------------------------------------------------------------------- real fixtures (../shared)


def test_real_cr_jpeg_baseline_pixels_and_metadata() -> None:
    path = require_shared("dicom", "txv_siim.dcm")
    scan = load_scan(path)
    meta = scan.metadata
    assert (meta.source_format, meta.modality, meta.view) == ("dicom", "CR", "PA")
    assert meta.photometric_interpretation == "MONOCHROME2" and not meta.inverted
    assert meta.transfer_syntax == "JPEG Baseline (Process 1)"
    assert meta.pixel_spacing_mm == (0.168, 0.168)
    assert (meta.rows, meta.columns, meta.frames, meta.bits_stored) == (1024, 1024, 1, 8)
    assert meta.windowing.startswith("min-max")  # the file carries no VOI
    stored = dcmread(path).pixel_array
    np.testing.assert_allclose(scan.pixels, robust_stretch(stored), atol=1e-5)
    assert scan.volume is None and scan.volume_pixels is None


def test_real_monochrome1_copy_loads_as_exact_inverse() -> None:
    """txv_fake_monohr1.dcm holds byte-identical pixel data to txv_siim.dcm with the tag changed to
    MONOCHROME1, so honouring the tag must give the inverted image (not the same one)."""
    m2 = load_scan(require_shared("dicom", "txv_siim.dcm"))
    m1 = load_scan(require_shared("dicom", "txv_fake_monohr1.dcm"))
    assert np.array_equal(dcmread(require_shared("dicom", "txv_siim.dcm")).pixel_array,
                          dcmread(require_shared("dicom", "txv_fake_monohr1.dcm")).pixel_array)
    assert m1.metadata.inverted and not m2.metadata.inverted
    assert m1.metadata.photometric_interpretation == "MONOCHROME1"
    assert any("MONOCHROME1 inverted" in n for n in m1.metadata.notes)
    np.testing.assert_allclose(m1.pixels, 1.0 - m2.pixels, atol=1e-6)


def test_real_dx_secondary_capture_uncompressed() -> None:
    path = require_shared("dicom", "nhsx_nih_dx.dcm")
    scan = load_scan(path)
    meta = scan.metadata
    assert (meta.modality, meta.view, meta.transfer_syntax) == ("DX", None, "Implicit VR Little Endian")
    assert meta.pixel_spacing_mm is None and scan.pixels.shape == (1024, 1024)
    np.testing.assert_allclose(scan.pixels, robust_stretch(dcmread(path).pixel_array), atol=1e-5)


def test_real_dicom_with_png_extension_loads_by_content(tmp_path) -> None:
    target = tmp_path / "chest.png"
    target.write_bytes(require_shared("dicom", "txv_siim.dcm").read_bytes())
    scan = load_scan(target)
    assert scan.metadata.source_format == "dicom" and scan.metadata.modality == "CR"
    assert any(".png does not match its content (dicom)" in n for n in scan.metadata.notes)


# --------------------------------------------------------------------------- synthetic DICOM: grayscale


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_unsigned_bit_depths_min_max_and_orientation(bits: int) -> None:
    maxv = (1 << bits) - 1
    arr = phantom(maxv).astype(np.uint8 if bits == 8 else np.uint16)
    scan = load_scan(dicom_bytes(arr, bits_stored=bits))
    assert_marker(scan.pixels)
    np.testing.assert_allclose(scan.pixels, arr / maxv, atol=1e-6)
    assert scan.metadata.bits_stored == bits
    assert scan.metadata.windowing == "min-max (0.5-99.5 percentiles)"
    assert scan.metadata.transfer_syntax == "Explicit VR Little Endian"


@pytest.mark.parametrize("bits", [12, 16])
def test_signed_pixel_representation(bits: int) -> None:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    arr = phantom(hi, lo=lo).astype(np.int16)
    ds = make_ds(arr, bits_stored=bits)
    assert ds.PixelRepresentation == 1
    scan = load_scan(to_bytes(ds))
    assert_marker(scan.pixels)
    np.testing.assert_allclose(scan.pixels, (arr.astype(np.float64) - lo) / (hi - lo), atol=1e-6)


def test_rescale_then_window_center_width() -> None:
    stored = phantom(4095).astype(np.uint16)
    data = dicom_bytes(stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000,
                       WindowCenter=1000, WindowWidth=2000)
    scan = load_scan(data)
    expected = window(stored * 2.0 - 1000.0, 1000, 2000)
    np.testing.assert_allclose(scan.pixels, expected, atol=1e-5)
    assert scan.metadata.windowing == "window C=1000 W=2000"
    assert scan.pixels[:8, :8].min() == 1.0 and scan.pixels[-8:, -8:].max() == 0.0


def test_multiple_window_presets_use_the_first_and_record_it() -> None:
    stored = phantom(4095).astype(np.uint16)
    data = dicom_bytes(stored, bits_stored=12, WindowCenter=[2048, 40], WindowWidth=[4096, 400])
    scan = load_scan(data)
    np.testing.assert_allclose(scan.pixels, window(stored, 2048, 4096), atol=1e-5)
    assert scan.metadata.windowing == "window C=2048 W=4096"
    assert any("2 window presets" in n and "C=2048 W=4096" in n for n in scan.metadata.notes)


def test_sigmoid_voi_function() -> None:
    stored = phantom(4095).astype(np.uint16)
    scan = load_scan(dicom_bytes(stored, bits_stored=12, WindowCenter=2048, WindowWidth=1000,
                                 VOILUTFunction="SIGMOID"))
    expected = 1 / (1 + np.exp(-4 * (stored - 2048.0) / 1000))
    np.testing.assert_allclose(scan.pixels, expected, atol=1e-5)
    assert scan.metadata.windowing.endswith("SIGMOID")


@pytest.mark.parametrize("vr, first_map", [("US", 0), ("OW", 100)])
def test_voi_lut_sequence_preferred_over_window(vr: str, first_map: int) -> None:
    stored = phantom(4095).astype(np.uint16)
    lut = np.round(65535 * np.sqrt(np.arange(4096) / 4095)).astype(np.uint16)
    ds = make_ds(stored, bits_stored=12, WindowCenter=10, WindowWidth=20)
    ds.VOILUTSequence = DicomSequence([lut_item([4096, first_map, 16], lut, vr)])
    scan = load_scan(to_bytes(ds))
    idx = np.clip(stored.astype(np.int64) - first_map, 0, 4095)
    np.testing.assert_allclose(scan.pixels, lut[idx] / 65535.0, atol=1e-6)
    assert scan.metadata.windowing == "VOI LUT"
    assert any("Window Center/Width ignored" in n for n in scan.metadata.notes)
    assert_marker(scan.pixels)


def test_modality_lut_sequence_is_applied() -> None:
    stored = phantom(4095).astype(np.uint16)
    ds = make_ds(stored, bits_stored=12)
    ds.ModalityLUTSequence = DicomSequence([lut_item([4096, 0, 12], 4095 - np.arange(4096))])
    scan = load_scan(to_bytes(ds))
    np.testing.assert_allclose(scan.pixels, 1.0 - stored / 4095.0, atol=1e-6)  # the LUT inverts
    assert scan.pixels[:8, :8].max() == 0.0


@pytest.mark.parametrize("voi", [{}, {"WindowCenter": 1800, "WindowWidth": 3000}])
def test_monochrome1_equals_monochrome2(voi: dict) -> None:
    m2_stored = phantom(4095).astype(np.uint16)
    m1_stored = (4095 - m2_stored).astype(np.uint16)
    m1_voi = {"WindowCenter": 4095 - voi["WindowCenter"] + 1, "WindowWidth": voi["WindowWidth"]} if voi else {}
    m2 = load_scan(dicom_bytes(m2_stored, bits_stored=12, **voi))
    m1 = load_scan(dicom_bytes(m1_stored, photometric="MONOCHROME1", bits_stored=12, **m1_voi))
    assert m1.metadata.inverted and not m2.metadata.inverted
    assert any("MONOCHROME1" in n for n in m1.metadata.notes)
    np.testing.assert_allclose(m1.pixels, m2.pixels, atol=1e-3)
    assert_marker(m1.pixels)


@pytest.mark.parametrize("photometric, range_limit", [("MONOCHROME2", None), ("MONOCHROME2", 3500),
                                                      ("MONOCHROME1", None)])
def test_pixel_padding_excluded_from_stats_and_black(photometric: str, range_limit: int | None) -> None:
    body = phantom(3000)
    stored = body.copy()
    stored[:8, -8:] = 4095 if range_limit is None else np.linspace(3500, 4095, 64).reshape(8, 8)
    if photometric == "MONOCHROME1":
        stored_file = np.where(stored > 3000, stored, 3000 - stored)  # padding keeps its value
    else:
        stored_file = stored
    ds = make_ds(stored_file.astype(np.uint16), photometric=photometric, bits_stored=12)
    ds.add_new(0x00280120, "US", 4095)  # PixelPaddingValue
    if range_limit is not None:
        ds.add_new(0x00280121, "US", range_limit)  # PixelPaddingRangeLimit
    scan = load_scan(to_bytes(ds))
    expected = body / 3000.0
    expected[:8, -8:] = 0.0
    np.testing.assert_allclose(scan.pixels, expected, atol=1e-6)
    assert any("64 padding pixels" in n for n in scan.metadata.notes)


def test_no_file_meta_header_implicit_vr_with_padding() -> None:
    stored = phantom(3000).astype(np.uint16)
    stored[:8, -8:] = 4095
    ds = make_ds(stored, bits_stored=12)
    ds.add_new(0x00280120, "US", 4095)
    raw = to_bytes(ds, file_meta=False)
    assert raw[128:132] != b"DICM" and raw[:2] == b"\x08\x00"
    scan = load_scan(raw)
    with_meta = load_scan(to_bytes(ds))
    np.testing.assert_array_equal(scan.pixels, with_meta.pixels)
    assert scan.pixels[:8, -8:].max() == 0.0
    assert any("no file meta header" in n for n in scan.metadata.notes)
    assert scan.metadata.transfer_syntax == "Implicit VR Little Endian"


def test_meta_header_without_preamble() -> None:
    raw = dicom_bytes(phantom(255).astype(np.uint8))
    scan = load_scan(raw[128:])  # starts with "DICM"
    assert_marker(scan.pixels)
    assert any("no DICOM preamble" in n for n in scan.metadata.notes)


# --------------------------------------------------------------------------- compressed transfer syntaxes


def test_rle_lossless_matches_uncompressed() -> None:
    stored = phantom(4095).astype(np.uint16)
    plain = load_scan(dicom_bytes(stored, bits_stored=12))
    ds = make_ds(stored, bits_stored=12)
    ds.compress(RLELossless)
    scan = load_scan(to_bytes(ds))
    assert scan.metadata.transfer_syntax == "RLE Lossless"
    np.testing.assert_array_equal(scan.pixels, plain.pixels)


def test_jpeg2000_lossless_matches_uncompressed() -> None:
    from pydicom.pixels import get_encoder

    if not get_encoder(JPEG2000Lossless).is_available:
        pytest.skip("no JPEG 2000 encoder installed (pylibjpeg-openjpeg >= 2.0 provides one)")
    stored = phantom(4095).astype(np.uint16)
    plain = load_scan(dicom_bytes(stored, bits_stored=12))
    ds = make_ds(stored, bits_stored=12)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    scan = load_scan(to_bytes(ds))
    assert scan.metadata.transfer_syntax == "JPEG 2000 Image Compression (Lossless Only)"
    np.testing.assert_array_equal(scan.pixels, plain.pixels)


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_jpeg_lossless_sv1_matches_uncompressed(bits: int) -> None:
    maxv = (1 << bits) - 1
    stored = phantom(maxv).astype(np.uint8 if bits == 8 else np.uint16)
    plain = load_scan(dicom_bytes(stored, bits_stored=bits))
    ds = with_encapsulated(make_ds(stored, bits_stored=bits), [encode_jpeg_lossless_sv1(stored, bits)],
                           JPEGLosslessSV1)
    scan = load_scan(to_bytes(ds))
    assert scan.metadata.transfer_syntax.startswith("JPEG Lossless, Non-Hierarchical, First-Order Prediction")
    np.testing.assert_array_equal(scan.pixels, plain.pixels)


def test_jpeg_ls_lossless_matches_uncompressed() -> None:
    jls = load_scan(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    plain = load_scan(get_testdata_file("MR_small.dcm"))
    assert jls.metadata.transfer_syntax == "JPEG-LS Lossless Image Compression"
    np.testing.assert_array_equal(jls.volume, plain.volume)
    np.testing.assert_array_equal(jls.pixels, plain.pixels)


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")
def test_truncated_compressed_pixel_data_is_rejected() -> None:
    stored = phantom(4095).astype(np.uint16)
    ds = make_ds(stored, bits_stored=12)
    ds.compress(RLELossless)
    raw = to_bytes(ds)
    expect_error(raw[: len(raw) - 300], "corrupt or truncated")


# --------------------------------------------------------------------------- decode budgets inside DICOM (issue 29)


@pytest.fixture
def no_decoder(monkeypatch) -> list[str]:
    """Record any call of pydicom's decoder: a hostile frame must be refused before it."""
    import pydicom.pixels

    calls: list[str] = []
    real = pydicom.pixels.pixel_array

    def spy(*args, **kwargs):
        calls.append("decoded")
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom.pixels, "pixel_array", spy)
    return calls


@pytest.mark.parametrize("side", [40_000, 20_000])
def test_embedded_jpeg_frame_header_is_held_to_the_pixel_budget(side: int, no_decoder: list[str]) -> None:
    import tracemalloc

    from tests.make_bad_inputs import sof_bomb_dicom_bytes

    data = sof_bomb_dicom_bytes(side)
    assert len(data) < 20_000
    tracemalloc.start()
    try:
        expect_error(data, rf"compressed image inside the DICOM file is too large \({side}x{side}\); "
                           r"the limit is 50 megapixels")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert no_decoder == [] and peak < 20_000_000


def test_embedded_codestream_must_match_the_header(no_decoder: list[str]) -> None:
    from tests.make_bad_inputs import big_embedded_jpeg_dicom_bytes, jpeg_dicom_bytes

    expect_error(big_embedded_jpeg_dicom_bytes(7000),
                 r"does not match its header \(7000x7000 in the image, 200x256 in the header\)")
    grey = (phantom(255) // 1).astype(np.uint8)
    colour = jpeg_bytes(np.stack([grey] * 3, -1))       # a 3-component JPEG under a MONOCHROME2 header
    expect_error(jpeg_dicom_bytes(grey, jpeg=colour), r"does not match its header \(3 colour components")
    assert no_decoder == []
    ok = load_scan(jpeg_dicom_bytes(grey))             # the same film, consistent: decoded as usual
    assert ok.pixels.shape == (H, W) and no_decoder == ["decoded"]


def test_truncated_compressed_frame_is_refused_not_decoded_as_garbage(no_decoder: list[str]) -> None:
    from tests.make_bad_inputs import truncated_jpeg_dicom_bytes

    for keep in (1 / 3, 0.9):
        expect_error(truncated_jpeg_dicom_bytes(keep), "a compressed frame ends before its end marker")
    assert no_decoder == []


def test_truncated_jpeg2000_frame_and_bad_rle_header_are_refused() -> None:
    from pydicom.encaps import get_frame
    from pydicom.pixels import get_encoder

    stored = phantom(4095).astype(np.uint16)
    if get_encoder(JPEG2000Lossless).is_available:
        ds = make_ds(stored, bits_stored=12)
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        frame = get_frame(ds.PixelData, 0)
        ds.PixelData = encapsulate([frame[: len(frame) * 2 // 3 // 2 * 2]])
        expect_error(to_bytes(ds), "ends before its end marker")
        big = bytearray(frame)
        at = frame.index(b"\xff\x4f\xff\x51") + 4
        big[at + 4:at + 12] = (30_000).to_bytes(4, "big") * 2          # Xsiz, Ysiz
        ds.PixelData = encapsulate([bytes(big)])
        expect_error(to_bytes(ds), r"too large \(30000x30000\)")
    ds = make_ds(stored, bits_stored=12)
    ds.compress(RLELossless)
    frame = bytearray(get_frame(ds.PixelData, 0))
    frame[:4] = (5).to_bytes(4, "little")                               # 5 segments for 16-bit grey (2 expected)
    ds.PixelData = encapsulate([bytes(frame)])
    expect_error(to_bytes(ds), r"does not match its header \(RLE segments\)")


def test_compressed_volume_with_fewer_frames_than_its_header_is_refused() -> None:
    from pydicom.encaps import get_frame

    ds = make_ds(phantom(4095).astype(np.uint16), bits_stored=12, modality="CT", sop=CT_SOP)
    ds.compress(RLELossless)
    frame = get_frame(ds.PixelData, 0)
    ds.NumberOfFrames = 3                                                # all frames of a volume are decoded
    ds.PixelData = encapsulate([frame])
    expect_error(to_bytes(ds), r"fewer image frames \(1\) than its header says \(3\)")


def test_deflated_dicom_loads_like_the_plain_file() -> None:
    stored = phantom(4095).astype(np.uint16)
    plain = load_scan(dicom_bytes(stored, bits_stored=12))
    ds = make_ds(stored, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data = to_bytes(ds)
    assert len(data) < stored.nbytes
    scan = load_scan(data)
    assert scan.metadata.transfer_syntax == "Deflated Explicit VR Little Endian"
    np.testing.assert_array_equal(scan.pixels, plain.pixels)
    assert mio.header_pixels(data) == H * W
    expect_error(data[: len(data) - 200], r"corrupt or truncated DICOM file \(the deflated dataset ends early\)")


def test_deflate_bomb_is_refused_while_inflating(monkeypatch) -> None:
    """2 GB of zeros in a 2 MB file: inflated in steps through a capped stream, never whole."""
    import tracemalloc

    from tests.make_bad_inputs import deflate_bomb_dicom_bytes

    small = deflate_bomb_dicom_bytes(64 * 1024 * 1024, block=1024 * 1024)
    monkeypatch.setattr(mio.limits, "MAX_INFLATED_BYTES", 8 * 1024 * 1024)
    tracemalloc.start()
    try:
        expect_error(small, r"the deflated DICOM file inflates to more than the 8 MB limit")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 1024 * 1024
    monkeypatch.setattr(mio.limits, "MAX_INFLATED_BYTES", 128 * 1024 * 1024)
    assert load_scan(small).pixels.shape == (64, 80)     # under the cap it is an ordinary file


def test_deflate_bomb_of_the_issue_is_refused_at_the_default_cap() -> None:
    from tests.make_bad_inputs import deflate_bomb_dicom_bytes

    bomb = deflate_bomb_dicom_bytes()
    assert len(bomb) < 3_000_000
    expect_error(bomb, r"inflates to more than the 200 MB limit")


# --------------------------------------------------------------------------- multi-frame, CT/MR


def test_multiframe_radiograph_uses_first_frame() -> None:
    first = phantom(4095)
    frames = np.stack([first, 4095 - first, np.full_like(first, 7)]).astype(np.uint16)
    scan = load_scan(dicom_bytes(frames, bits_stored=12))
    np.testing.assert_allclose(scan.pixels, first / 4095.0, atol=1e-6)
    assert scan.metadata.frames == 3 and scan.volume is None
    assert any("first of 3 frames" in n for n in scan.metadata.notes)


def test_ct_single_slice_hu_volume_and_chest_window() -> None:
    stored = phantom(3000).astype(np.int16)
    stored[:8, -8:] = -2000  # padding outside the field of view
    ds = make_ds(stored, bits_stored=16, modality="CT", sop=CT_SOP, RescaleSlope=1, RescaleIntercept=-1024)
    ds.add_new(0x00280120, "SS", -2000)
    scan = load_scan(to_bytes(ds))
    hu = stored.astype(np.float64) - 1024
    body = np.ones(stored.shape, bool)
    body[:8, -8:] = False
    assert scan.volume is not None and scan.volume.shape == (1, H, W) and scan.volume.dtype == np.float32
    np.testing.assert_array_equal(scan.volume[0][body], hu[body])
    assert scan.volume[0][~body].min() == hu[body].min()  # padding set to the minimum, not -3024
    expected = window(hu, *CT_DISPLAY_WINDOW)
    expected[~body] = 0
    np.testing.assert_allclose(scan.pixels, expected, atol=1e-5)
    np.testing.assert_array_equal(scan.volume_pixels[0], scan.pixels)
    assert scan.metadata.windowing == "CT chest window C=-400 W=1500 HU"
    assert any("not a radiograph" in n for n in scan.metadata.notes)


def ct_slice(stored: np.ndarray, *, series: str, position: list[float] | None, number: int | None,
             orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0)) -> bytes:
    ds = make_ds(stored.astype(np.int16), bits_stored=16, modality="CT", sop=CT_SOP,
                 RescaleSlope=2, RescaleIntercept=-1024, SeriesInstanceUID=series, PixelSpacing=[0.7, 0.7])
    if position is not None:
        ds.ImagePositionPatient = position
        ds.ImageOrientationPatient = list(orientation)
    if number is not None:
        ds.InstanceNumber = number
    return to_bytes(ds)


def ct_series(n: int = 5, *, positions: bool = True, numbers: bool = True, orientation: tuple[float, ...] = (
        1, 0, 0, 0, 1, 0), axis: int = 2) -> tuple[list[bytes], list[np.ndarray]]:
    """n slices with stored = phantom + 100*k at position k*2.5 mm along ``axis``; returned shuffled."""
    series = generate_uid()
    truth = [phantom(1000) + 100 * k for k in range(n)]
    files = []
    for k in range(n):
        pos = [0.0, 0.0, 0.0]
        pos[axis] = 2.5 * k
        files.append(ct_slice(truth[k], series=series, position=pos if positions else None,
                              number=(n - k if positions else k + 1) if numbers else None, orientation=orientation))
    order = [3, 0, 4, 1, 2][:n] if n == 5 else list(reversed(range(n)))
    return [files[i] for i in order], truth


def test_ct_series_sorted_by_position_with_hu() -> None:
    files, truth = ct_series()
    scan = load_series(files)
    assert scan.volume.shape == (5, H, W)
    for k in range(5):  # InstanceNumber runs the other way: the position must win
        np.testing.assert_array_equal(scan.volume[k], truth[k] * 2.0 - 1024)
    np.testing.assert_array_equal(scan.pixels, scan.volume_pixels[2])
    np.testing.assert_allclose(scan.volume_pixels, window(np.stack(truth) * 2.0 - 1024, *CT_DISPLAY_WINDOW), atol=1e-5)
    meta = scan.metadata
    assert (meta.modality, meta.frames, meta.rows, meta.columns) == ("CT", 5, H, W)
    assert meta.pixel_spacing_mm == (0.7, 0.7)
    assert any("sorted by ImagePositionPatient; spacing 2.5 mm" in n for n in meta.notes)


def test_series_sorted_along_oblique_normal_not_z() -> None:
    # sagittal: rows along +y, columns along -z -> normal = -x; positions vary in x only
    files, truth = ct_series(orientation=(0, 1, 0, 0, 0, -1), axis=0)
    scan = load_series(files)
    for k in range(5):  # ascending along the normal = descending x
        np.testing.assert_array_equal(scan.volume[k], truth[4 - k] * 2.0 - 1024)


def test_series_falls_back_to_instance_number() -> None:
    files, truth = ct_series(positions=False)
    scan = load_series(files)
    for k in range(5):
        np.testing.assert_array_equal(scan.volume[k], truth[k] * 2.0 - 1024)
    assert any("sorted by InstanceNumber" in n for n in scan.metadata.notes)


def test_load_scans_groups_one_series_and_keeps_others_apart() -> None:
    files, truth = ct_series()
    grouped = load_scans(files)
    assert len(grouped) == 1 and grouped[0].volume.shape == (5, H, W)
    np.testing.assert_array_equal(grouped[0].volume[0], truth[0] * 2.0 - 1024)
    png = png_bytes(phantom(255).astype(np.uint8))
    mixed = load_scans([png, files[0]])
    assert [s.metadata.source_format for s in mixed] == ["png", "dicom"]
    assert mixed[1].volume.shape == (1, H, W)


def test_series_rejects_mixed_series_with_position_only() -> None:
    files, _ = ct_series(3)
    other, _ = ct_series(1)
    with pytest.raises(ScanError, match=r"^file 4 of 4: belongs to a different series$"):
        load_series(files + other)
    with pytest.raises(ScanError, match=r"^file 2 of 2: the file is empty"):
        load_series([files[0], b""])


def test_enhanced_multiframe_volume_sorted_by_functional_groups() -> None:
    truth = [phantom(1000) + 50 * k for k in range(4)]
    stored = np.stack(truth[::-1]).astype(np.uint16)  # stored top slice first
    ds = make_ds(stored, bits_stored=16, modality="MR")
    per_frame = []
    for i in range(4):
        pos = Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, float(3 - i) * 4.0]
        item = Dataset()
        item.PlanePositionSequence = DicomSequence([pos])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    orient, transform, shared = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    transform.RescaleSlope, transform.RescaleIntercept = 0.5, 10
    shared.PlaneOrientationSequence = DicomSequence([orient])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    scan = load_scan(to_bytes(ds))
    assert scan.volume.shape == (4, H, W)
    for k in range(4):
        np.testing.assert_allclose(scan.volume[k], truth[k] * 0.5 + 10)
    assert any("treated as a volume of 4 slices" in n for n in scan.metadata.notes)
    assert any("spacing 4 mm" in n for n in scan.metadata.notes)


# --------------------------------------------------------------------------- colour DICOM, float data


def rgb_phantom() -> np.ndarray:
    base = phantom(255)
    return np.stack([base, np.flipud(base), np.full_like(base, 60)], axis=-1).astype(np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0


def test_rgb_dicom_to_luma() -> None:
    rgb = rgb_phantom()
    scan = load_scan(dicom_bytes(rgb, photometric="RGB", bits_stored=8, modality="OT"))
    np.testing.assert_allclose(scan.pixels, luma(rgb), atol=1e-5)
    assert scan.metadata.photometric_interpretation == "RGB"
    assert any("RGB converted to grayscale" in n for n in scan.metadata.notes)


def test_ybr_full_dicom_converted_to_rgb_then_luma() -> None:
    rgb = rgb_phantom()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    scan = load_scan(dicom_bytes(ybr, photometric="YBR_FULL", bits_stored=8, modality="OT"))
    np.testing.assert_allclose(scan.pixels, luma(rgb), atol=2 / 255)
    assert any("YBR_FULL converted to RGB" in n for n in scan.metadata.notes)


def test_palette_and_multiframe_ybr_jpeg_examples() -> None:
    from pydicom import examples
    from pydicom.pixels import apply_color_lut, pixel_array

    palette = load_scan(examples.get_path("palette_color"))
    ds = examples.palette_color
    rgb = apply_color_lut(ds.pixel_array, ds)
    np.testing.assert_allclose(palette.pixels, luma(rgb.astype(np.float64) * 255 / 65535), atol=1e-4)
    assert any("PALETTE COLOR converted to RGB" in n for n in palette.metadata.notes)
    ybr = load_scan(examples.get_path("ybr_color"))  # JPEG Baseline, YBR_FULL_422, 30 frames
    first = pixel_array(examples.get_path("ybr_color"), index=0)
    np.testing.assert_allclose(ybr.pixels, luma(first), atol=1e-5)
    assert ybr.metadata.frames == 30 and ybr.metadata.transfer_syntax == "JPEG Baseline (Process 1)"
    assert "multi-frame file: first of 30 frames used" in ybr.metadata.notes


def float_dicom(values: np.ndarray) -> bytes:
    ds = make_ds(np.zeros(values.shape, np.uint16), bits_stored=16, modality="MR")
    del ds.PixelData
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.astype("<f4").tobytes()
    return to_bytes(ds)


def test_float_pixel_data_loads_and_nan_is_rejected() -> None:
    values = phantom(1000).astype(np.float32) / 7.0
    scan = load_scan(float_dicom(values))
    np.testing.assert_allclose(scan.volume[0], values)
    np.testing.assert_allclose(scan.pixels, values / values.max(), atol=1e-6)
    values[3, 3] = np.nan
    expect_error(float_dicom(values), "NaN or infinite")
    values[3, 3] = np.inf
    expect_error(float_dicom(values), "NaN or infinite")


# --------------------------------------------------------------------------- PNG / JPEG / other images


def test_png_8bit_grayscale_exact() -> None:
    arr = phantom(255).astype(np.uint8)
    scan = load_scan(png_bytes(arr))
    assert_marker(scan.pixels)
    np.testing.assert_allclose(scan.pixels, arr / 255.0, atol=1e-7)
    meta = scan.metadata
    assert (meta.source_format, meta.modality, meta.bits_stored, meta.frames) == ("png", None, 8, 1)
    assert meta.windowing == "none (8-bit display values)" and meta.notes == ()


@pytest.mark.parametrize("maxv, divisor, bits", [(65535, 65535, 16), (4095, 4095, 12), (1000, 1023, 10)])
def test_png_16bit_scaled_by_bit_range(maxv: int, divisor: int, bits: int) -> None:
    arr = phantom(maxv).astype(np.uint16)
    scan = load_scan(png_bytes(arr))
    np.testing.assert_allclose(scan.pixels, arr / divisor, atol=1e-6)
    assert scan.metadata.bits_stored == bits and scan.metadata.windowing == f"bit range 0-{divisor}"
    assert any(f"only {bits} bits" in n for n in scan.metadata.notes) == (bits < 16)


def test_png_rgb_to_luma_with_note() -> None:
    rgb = rgb_phantom()
    scan = load_scan(png_bytes(rgb))
    np.testing.assert_allclose(scan.pixels, luma(rgb), atol=1e-5)
    assert "RGB converted to grayscale (ITU-R BT.601 luma)" in scan.metadata.notes


def test_png_rgba_drops_alpha() -> None:
    rgba = np.concatenate([rgb_phantom(), np.zeros((H, W, 1), np.uint8)], axis=-1)
    rgba[:24, :, 3] = 255  # half transparent: the colours still show, not black
    scan = load_scan(png_bytes(rgba))
    np.testing.assert_allclose(scan.pixels, luma(rgba[..., :3]), atol=1e-5)
    assert "alpha channel dropped" in scan.metadata.notes


def test_png_la_and_palette_and_bilevel() -> None:
    gray = phantom(255).astype(np.uint8)
    la = load_scan(png_bytes(np.stack([gray, np.full_like(gray, 9)], -1)))
    np.testing.assert_allclose(la.pixels, gray / 255.0, atol=1e-7)
    assert "alpha channel dropped" in la.metadata.notes
    pal = Image.fromarray(gray).convert("P")  # 8-bit grey palette
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    scan = load_scan(buf.getvalue())
    np.testing.assert_allclose(scan.pixels, gray / 255.0, atol=1e-5)
    assert "palette image converted to grayscale" in scan.metadata.notes
    bilevel = Image.fromarray(gray > 127).convert("1")
    buf = io.BytesIO()
    bilevel.save(buf, format="PNG")
    scan = load_scan(buf.getvalue())
    np.testing.assert_array_equal(scan.pixels, (gray > 127).astype(np.float32))


def test_jpeg_exif_orientation_rotates_to_display() -> None:
    stored = phantom(255).astype(np.uint8)  # bright square at stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    scan = load_scan(jpeg_bytes(stored, exif=exif.tobytes()))
    assert scan.pixels.shape == (W, H)
    assert (scan.metadata.rows, scan.metadata.columns) == (W, H)
    assert scan.pixels[:8, -8:].min() > 0.9  # top-left went to top-right
    assert scan.pixels[-8:, :8].max() < 0.1  # bottom-right went to bottom-left
    assert np.abs(scan.pixels - np.rot90(stored, k=-1) / 255.0).mean() < 0.01
    assert "EXIF orientation 6 applied" in scan.metadata.notes


def test_png_exif_orientation_180_exact() -> None:
    stored = phantom(255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 3
    scan = load_scan(png_bytes(stored, exif=exif.tobytes()))
    np.testing.assert_allclose(scan.pixels, np.rot90(stored, 2) / 255.0, atol=1e-7)


def test_png_with_dicom_extension_and_filename_hint(tmp_path) -> None:
    data = png_bytes(phantom(255).astype(np.uint8))
    path = tmp_path / "scan.dcm"
    path.write_bytes(data)
    scan = load_scan(path)
    assert_marker(scan.pixels)
    assert scan.metadata.source_format == "png"
    assert any(".dcm does not match its content (png)" in n for n in scan.metadata.notes)
    hinted = load_scan(data, filename="SMITH_JOHN.jpg")
    assert all("SMITH" not in n for n in hinted.metadata.notes)
    assert any(".jpg does not match" in n for n in hinted.metadata.notes)


def test_multiframe_gif_first_frame_and_float_tiff() -> None:
    gray = phantom(255).astype(np.uint8)
    frames = [Image.fromarray(gray).convert("P"), Image.fromarray(255 - gray).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    scan = load_scan(buf.getvalue())
    assert scan.metadata.frames == 2 and "first of 2 frames used" in scan.metadata.notes
    assert_marker(scan.pixels)
    values = phantom(1000).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="TIFF")  # mode F
    scan = load_scan(buf.getvalue())
    np.testing.assert_allclose(scan.pixels, values / 1000.0, atol=1e-6)
    values[0, 0] = np.nan
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="TIFF")
    expect_error(buf.getvalue(), "NaN or infinite")


# --------------------------------------------------------------------------- rejections


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("scan.dcm", b"not really")
    return buf.getvalue()


@pytest.mark.parametrize("data, match", [
    (b"Patient notes: cough and fever for three days.\n" * 20, "the file is text"),
    (b"<html><body>404: Not Found</body></html>", "the file is text"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF document"),
    (_zip_bytes(), "ZIP archive"),
    (b"\x78\x9c" + bytes(range(256)) * 4, "unrecognised file format"),  # arbitrary binary blob
    (b"\x1f\x8b\x08\x00" + bytes(200), "gzip"),
    (b"", "empty"),
])
def test_non_images_rejected(data: bytes, match: str) -> None:
    expect_error(data, match)


def test_empty_missing_folder_and_wrong_type(tmp_path) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    expect_error(empty, "empty")
    expect_error(tmp_path / "missing.png", "file not found")
    expect_error(tmp_path, "folder")
    expect_error(12345, "unsupported input type int")
    expect_error("scan\x00.png", "invalid file path")


def test_file_size_limit(tmp_path, monkeypatch) -> None:
    data = png_bytes(phantom(255).astype(np.uint8))
    monkeypatch.setattr(mio.limits, "MAX_FILE_BYTES", len(data) - 1)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    expect_error(path, "larger than")
    expect_error(data, "larger than")


def test_truncated_and_corrupt_files_rejected() -> None:
    png = png_bytes(phantom(255).astype(np.uint8))
    expect_error(png[: len(png) // 2], "corrupt or truncated PNG")
    corrupt = bytearray(png)
    idat = png.index(b"IDAT")
    corrupt[idat + 10] ^= 0xFF
    expect_error(bytes(corrupt), "corrupt or truncated PNG")
    jpg = jpeg_bytes(phantom(255).astype(np.uint8))
    expect_error(jpg[: len(jpg) // 2], "corrupt or truncated JPEG")
    dcm = dicom_bytes(phantom(4095).astype(np.uint16), bits_stored=12)
    expect_error(dcm[: len(dcm) - 1000], "corrupt or truncated DICOM")


def png_header_only(width: int, height: int) -> bytes:
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
            + (len(idat) - 4).to_bytes(4, "big") + idat + zlib.crc32(idat).to_bytes(4, "big"))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("width, height", [(11_000, 10_000), (100_000, 100_000)])
def test_png_decompression_bomb_rejected_from_header(width: int, height: int) -> None:
    expect_error(png_header_only(width, height), "too large")


def test_size_limits_small_zero_and_dicom_bomb() -> None:
    expect_error(png_bytes(np.arange(100, dtype=np.uint8).reshape(10, 10)), "too small")
    expect_error(dicom_bytes(np.arange(64, dtype=np.uint8).reshape(8, 8)), "too small")
    ds = make_ds(phantom(255).astype(np.uint8))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60_000, 60_000, 100  # would be 360 GB decoded
    expect_error(to_bytes(ds), "too large")
    ds.Rows = 0
    expect_error(to_bytes(ds), "zero size")


def test_blank_images_rejected() -> None:
    expect_error(png_bytes(np.full((32, 32), 128, np.uint8)), "blank image")
    expect_error(dicom_bytes(np.full((32, 32), 700, np.uint16), bits_stored=12), "blank image")
    padded = np.full((32, 32), 700, np.uint16)
    padded[:4] = 0
    ds = make_ds(padded, bits_stored=12)
    ds.add_new(0x00280120, "US", 0)  # only padding differs from the constant body
    expect_error(to_bytes(ds), "blank image")


def test_dicom_without_pixel_data_encrypted_and_unsupported_syntax() -> None:
    ds = make_ds(phantom(255).astype(np.uint8))
    del ds.PixelData
    expect_error(to_bytes(ds), "no pixel data")
    encrypted = Dataset()
    encrypted.EncryptedContentTransferSyntaxUID = ExplicitVRLittleEndian
    encrypted.EncryptedContent = b"\x30\x82" + bytes(64)
    ds.EncryptedAttributesSequence = DicomSequence([encrypted])
    expect_error(to_bytes(ds), "encrypted DICOM")
    odd = with_encapsulated(make_ds(phantom(255).astype(np.uint8)), [b"\x00" * 100], "1.2.826.0.1.3680043.9.9999.1")
    buf = io.BytesIO()
    odd.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=True)
    expect_error(buf.getvalue(), "unsupported DICOM transfer syntax: unknown")


def test_report_dicom_names_its_kind() -> None:
    err = expect_error(get_testdata_file("rtplan.dcm"), "no pixel data")
    assert "RT Plan Storage" in str(err)


# --------------------------------------------------------------------------- privacy


def test_identifiers_never_leak(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    stored = phantom(4095).astype(np.uint16)
    ds = make_ds(stored, bits_stored=12, ViewPosition="PA", OperatorsName="SECRET^OPERATOR")
    good = to_bytes(ds)
    bad_code = to_bytes(make_ds(stored, bits_stored=12, modality="SECRET", ViewPosition="SECRET"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scans = [load_scan(good), load_scan(good[128:]), load_scan(to_bytes(ds, file_meta=False)),
                 load_scan(bad_code)]
        errors = []
        for broken in (good[: len(good) // 2], good[:-2000]):
            with pytest.raises(ScanError) as info:
                load_scan(broken)
            errors.append(str(info.value))
    for scan in scans:
        assert_no_secret(repr(scan.metadata.to_dict()))
        assert_no_secret(repr(scan))
    assert scans[3].metadata.modality is None and scans[3].metadata.view is None  # not whitelisted codes
    assert scans[0].metadata.view == "PA"
    for message in errors:
        assert_no_secret(message)
    for record in caplog.records:
        assert_no_secret(record.getMessage())
    for w in caught:
        assert_no_secret(str(w.message))


def test_metadata_to_dict_is_plain_json() -> None:
    import json

    scan = load_scan(dicom_bytes(phantom(4095).astype(np.uint16), bits_stored=12, PixelSpacing=[0.2, 0.25]))
    d = scan.metadata.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["pixel_spacing_mm"] == [0.2, 0.25] and isinstance(d["notes"], list)
    assert set(d) == {"source_format", "modality", "view", "photometric_interpretation", "bits_stored",
                      "pixel_spacing_mm", "transfer_syntax", "rows", "columns", "frames", "windowing",
                      "inverted", "notes"}


def test_imager_pixel_spacing_fallback_noted() -> None:
    scan = load_scan(dicom_bytes(phantom(255).astype(np.uint8), ImagerPixelSpacing=[0.15, 0.15]))
    assert scan.metadata.pixel_spacing_mm == (0.15, 0.15)
    assert any("ImagerPixelSpacing" in n for n in scan.metadata.notes)


# --------------------------------------------------------------------------- fuzz


@lru_cache(maxsize=1)
def _fuzz_bases() -> tuple[bytes, ...]:
    small = phantom(4095, h=24, w=32)
    rle = make_ds(small.astype(np.uint16), bits_stored=12)
    rle.compress(RLELossless)
    return (
        png_bytes((small // 16).astype(np.uint8)),
        jpeg_bytes((small // 16).astype(np.uint8)),
        dicom_bytes(small.astype(np.uint16), bits_stored=12, WindowCenter=2000, WindowWidth=3000),
        to_bytes(make_ds(small.astype(np.uint16), bits_stored=12), file_meta=False),
        to_bytes(rle),
    )


def assert_valid_scan(scan: Scan) -> None:
    assert isinstance(scan, Scan)
    assert scan.pixels.ndim == 2 and scan.pixels.dtype == np.float32
    assert np.isfinite(scan.pixels).all()
    assert scan.pixels.min() >= 0.0 and scan.pixels.max() <= 1.0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(base=st.integers(0, 4), seed=st.integers(0, 2**32 - 1), cut=st.floats(0.0, 1.0),
       flips=st.integers(0, 12), truncate=st.booleans())
def test_fuzz_mutated_files_load_or_raise_scan_error(base: int, seed: int, cut: float, flips: int,
                                                      truncate: bool) -> None:
    data = bytearray(_fuzz_bases()[base])
    rng = random.Random(seed)
    for _ in range(flips):
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    if truncate:
        data = data[: int(len(data) * cut)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scan = load_scan(bytes(data))
        except ScanError as exc:
            assert "\n" not in str(exc) and str(exc)
            assert_no_secret(str(exc))
            return
    assert_valid_scan(scan)
    assert_no_secret(repr(scan.metadata))


def test_load_scans_keeps_the_extension_hint(tmp_path):
    """A PNG saved as .dcm loads by content, and the pipeline-facing loader still says the extension is wrong."""
    from PIL import Image

    from medmm.io import load_scans

    path = tmp_path / "scan.dcm"
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(path, format="PNG")
    (scan,) = load_scans([path])
    assert scan.metadata.source_format == "png"
    assert any(".dcm" in n and "png" in n.lower() for n in scan.metadata.notes), scan.metadata.notes
    assert "scan" not in " ".join(scan.metadata.notes)  # only the extension, never the file name


@pytest.mark.parametrize("modality,noted", [("DX", False), ("CR", False), ("RG", False), ("OT", False),
                                            ("US", True), ("XC", True)])
def test_radiograph_modalities_one_definition(modality: str, noted: bool) -> None:
    """medmm.io.RADIOGRAPH_MODALITIES decides both the loader's note and the pipeline's warning (it used to be two
    sets that disagreed: RG films were noted by one and accepted by the other)."""
    from medmm.io import RADIOGRAPH_MODALITIES

    stored = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)
    scan = load_scan(dicom_bytes(stored, bits_stored=12, modality=modality))
    assert scan.metadata.modality == modality
    assert (modality not in RADIOGRAPH_MODALITIES) is noted
    assert any("not a chest radiograph modality" in n for n in scan.metadata.notes) is noted
