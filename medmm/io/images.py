"""Plain images (PNG, JPEG, GIF, TIFF, BMP, WebP, JPEG 2000) through Pillow, limited to the sniffed plugin."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from medmm.io import limits
from medmm.io.limits import _check_size
from medmm.io.pixels import _cap_side, _check_finite, _check_not_blank, _downsample_note, _luma, _min_max, _reduce_factor
from medmm.io.scan import Scan, ScanError, ScanMetadata


def _load_pillow(data: bytes, fmt: str, plugin: str | None) -> Scan:
    """PNG/JPEG/... via Pillow, restricted to the sniffed plugin; pixels scaled by bit range."""
    from PIL import Image, ImageOps

    label = fmt.upper()
    notes: list[str] = []
    try:
        im = Image.open(io.BytesIO(data), formats=[plugin] if plugin else None)
    except Image.DecompressionBombError:
        raise ScanError(f"the image is too large; the limit is {limits.MAX_PIXELS // 1_000_000} megapixels") from None
    except Exception:  # noqa: BLE001
        raise ScanError(f"corrupt or truncated {label} file") from None
    with im:
        width, height = im.size
        _check_size(height, width)
        try:
            frames = int(getattr(im, "n_frames", 1) or 1)
            im.seek(0)
            if fmt == "jpeg" and max(width, height) > limits.MAX_SIDE_PX:
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: the full image is never in memory
                scale = limits.MAX_SIDE_PX / max(width, height)
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
