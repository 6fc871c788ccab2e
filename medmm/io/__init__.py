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
* Inside a DICOM, every compressed frame's own header (JPEG SOFn, JPEG-LS SOF55, JPEG 2000 SIZ, RLE) is read before
  decoding: over ``MAX_PIXELS``, not matching the DICOM Rows/Columns/SamplesPerPixel, or ending before its end
  marker (a truncated frame), it is refused; a Deflated Explicit VR file inflates through a capped stream and is
  refused beyond ``MAX_INFLATED_BYTES`` (200 MiB), before the rest is allocated (``scripts/attack.py``).

Peak memory of one load is about 8 bytes per decoded pixel for the largest accepted file (50 MP:
~0.4 GB), retained memory at most ``MAX_SIDE_PX**2`` floats per scan.

Modules: ``load`` (reading, format sniffing, the loaders below), ``images`` (Pillow), ``dicom`` (the DICOM
loader) with ``dicom_header`` (element access, validated image attributes), ``dicom_budget`` (capped inflation,
compressed frame headers checked before decoding), ``dicom_pixels`` (Modality LUT, VOI, padding, inversion),
``dicom_volume`` (CT/MR/PT/NM volumes) and ``dicom_meta`` (whitelisted metadata, salted identity keys), ``pixels``
(shared pixel maths, downsampling), ``limits`` (the limits above: change them there, the loaders read
``limits.NAME`` at call time), ``scan`` (``Scan``, ``ScanMetadata``, ``ScanError``). Torch-free: numpy, Pillow and
pydicom only.

Errors are raised as ``ScanError`` with a one-line message that never contains patient identifiers;
metadata holds only whitelisted, non-identifying fields.
"""

from medmm.io import limits
from medmm.io.dicom import CT_DISPLAY_WINDOW, RADIOGRAPH_MODALITIES
from medmm.io.limits import (MAX_FILE_BYTES, MAX_PIXELS, MAX_REQUEST_BYTES, MAX_REQUEST_PIXELS, MAX_SIDE_PX,
                             MIN_SIDE_PX)
from medmm.io.load import header_pixels, load_scan, load_scans, load_series
from medmm.io.pixels import ROBUST_PERCENTILES
from medmm.io.scan import Scan, ScanError, ScanMetadata

__all__ = [
    "CT_DISPLAY_WINDOW",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_PIXELS",
    "MAX_SIDE_PX",
    "MIN_SIDE_PX",
    "RADIOGRAPH_MODALITIES",
    "ROBUST_PERCENTILES",
    "Scan",
    "ScanError",
    "ScanMetadata",
    "header_pixels",
    "limits",
    "load_scan",
    "load_scans",
    "load_series",
]
