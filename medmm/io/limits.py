"""Input limits of ``medmm.io``, checked from file sizes and headers before anything is decoded.

The loaders read these at call time as ``limits.NAME``: to change one (a test, a deployment), set it here,
e.g. ``monkeypatch.setattr(medmm.io.limits, "MAX_SIDE_PX", 64)``; the copies re-exported by ``medmm.io`` are
for reading only.
"""

from __future__ import annotations

from medmm.io.scan import ScanError

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
MAX_INFLATED_BYTES = 200 * 1024 * 1024
"""Largest size a Deflated Explicit VR Little Endian DICOM dataset may inflate to (the file limit again): the
dataset is inflated through a capped stream and refused as soon as it grows past this, never inflated whole."""


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
