"""The scans panel: whitelisted metadata per scan, and the viewer's frames (uint8 stacks, clamped indices)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Only these metadata fields are ever shown, in this order (medmm.io already whitelists; this is the UI's own
# guard, so a field added to ScanMetadata later is not displayed until someone decides it is safe to).
METADATA_FIELDS: tuple[tuple[str, str], ...] = (
    ("source_format", "Format"),
    ("modality", "Modality"),
    ("view", "View"),
    ("size", "Size (rows x columns)"),
    ("frames", "Frames / slices"),
    ("pixel_spacing_mm", "Pixel spacing (mm)"),
    ("bits_stored", "Bits stored"),
    ("photometric_interpretation", "Photometric interpretation"),
    ("inverted", "Inverted for display (MONOCHROME1)"),
    ("windowing", "Windowing applied"),
    ("transfer_syntax", "Transfer syntax"),
    ("notes", "Loader notes"),
)


# ------------------------------------------------------------------------------------------------ metadata
def _metadata_value(meta: Mapping[str, Any], key: str) -> str:
    if key == "size":
        return f"{meta.get('rows', '?')} x {meta.get('columns', '?')}"
    value = meta.get(key)
    if value is None or value == [] or value == ():
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "pixel_spacing_mm":
        return " x ".join(f"{float(v):.3g}" for v in value)
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return str(value)


def metadata_table(scan_metadata: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"headers", "data"}`` for a ``gr.Dataframe``: one row per whitelisted field, one column per scan."""
    headers = ["Field", *(f"Scan {i + 1}" for i in range(len(scan_metadata)))]
    if not scan_metadata:
        return {"headers": ["Field", "Value"], "data": [["Scans", "none (notes only)"]]}
    data = [[label, *(_metadata_value(m, key) for m in scan_metadata)] for key, label in METADATA_FIELDS]
    return {"headers": headers, "data": data}


# ------------------------------------------------------------------------------------------------ viewer
def viewer_stack(scan: Any) -> np.ndarray:
    """The scan as loaded (windowing applied) as uint8 ``[D, H, W]``: the volume for a CT series, else one slice."""
    pixels = scan.volume_pixels if getattr(scan, "volume_pixels", None) is not None else scan.pixels[None]
    return (np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def viewer_frame(stacks: Sequence[np.ndarray], scan_index: int | float = 0, slice_index: int | float = 0) -> np.ndarray | None:
    """One 2-D frame from :func:`viewer_stack` outputs; indices are clamped (sliders send floats)."""
    if not stacks:
        return None
    stack = stacks[min(max(int(scan_index), 0), len(stacks) - 1)]
    return stack[min(max(int(slice_index), 0), stack.shape[0] - 1)]


def middle_slice(stack: np.ndarray) -> int:
    return stack.shape[0] // 2
