"""Drawing explanations: heatmap overlays, PNG/array export, token highlights for the app.

Only matplotlib's object API (``matplotlib.figure.Figure`` + the Agg canvas): the app serves several users at once,
and pyplot keeps a process-wide "current figure" that concurrent requests would share. Nothing here computes
attributions (``medmm.explain`` does); these functions take plain numpy arrays.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

DEFAULT_CMAP = "inferno"  # perceptually uniform; its dark end fades into the film where the evidence is low


def overlay_figure(scan_pixels: np.ndarray, heatmap: np.ndarray, title: str, *, caption: str | None = None,
                   cmap: str = DEFAULT_CMAP, max_alpha: float = 0.65, width_in: float = 6.0,
                   max_height_in: float = 8.0, dpi: int = 100) -> "Figure":
    """The scan at its own aspect ratio with ``heatmap`` (values in [0, 1]) laid over it, and a colour bar.

    ``heatmap`` may have any shape: it is stretched over the scan's full extent, which is the exact inverse of the
    pipeline's squash resize (so a model-grid map lines up too). Opacity grows with the value, so regions without
    evidence show the film itself. ``title`` should name the finding and its probability; ``caption`` (optional)
    goes under the image, e.g. the method and "not a diagnosis".
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    scan = np.asarray(scan_pixels, dtype=np.float32)
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if scan.ndim != 2 or heat.ndim != 2:
        raise ValueError(f"expected 2-D scan and heatmap, got {scan.shape} and {heat.shape}")
    h, w = scan.shape
    extent = (0, w, h, 0)  # both layers share pixel coordinates of the scan
    width_in = min(width_in, (max_height_in - 0.9) / (0.86 * h / w))  # portrait scans: narrower, not taller
    fig = Figure(figsize=(width_in, width_in * h / w * 0.86 + 0.9), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(scan, cmap="gray", vmin=0.0, vmax=1.0, extent=extent, interpolation="antialiased")
    ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=1.0, alpha=max_alpha * heat, extent=extent, interpolation="bilinear")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=12)
    cax = ax.inset_axes([1.03, 0.0, 0.045, 1.0])  # axes coordinates: exactly the image's height
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), cax=cax)
    bar.set_label("relative attribution (positive evidence)", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    if caption:
        fig.supxlabel(caption, fontsize=8.5)
    return fig


def figure_to_png(fig: "Figure", dpi: int | None = None) -> bytes:
    """PNG bytes of ``fig`` rendered with the Agg canvas (no pyplot, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi)
    return buf.getvalue()


def figure_to_array(fig: "Figure") -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB pixels of ``fig`` (what ``gr.Image`` takes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def token_highlights(tokens: Sequence[tuple[str, float]], text: str | None = None
                     ) -> list[tuple[str, float | None]]:
    """``[(word, score)]`` -> what ``gr.HighlightedText`` takes: scores in [-1, 1], gaps as ``(gap, None)``.

    With the original ``text`` the gaps are the text's own (so "fever," keeps its comma attached) and text past the
    encoder's token limit is kept unscored; without it, words are separated by single spaces.
    """
    out: list[tuple[str, float | None]] = []
    cursor = 0
    lowered = text.lower() if text is not None else None
    for i, (word, score) in enumerate(tokens):
        value = float(np.clip(score, -1.0, 1.0)) if np.isfinite(score) else 0.0
        if not any(ch.isalnum() for ch in word):
            value = None  # punctuation: shown as plain text, not as a scored box
        if text is not None:
            found = text.find(word, cursor)
            if found < 0:
                found = lowered.find(word.lower(), cursor)
            if found >= 0:
                if found > cursor:
                    out.append((text[cursor:found], None))
                out.append((text[found:found + len(word)], value))
                cursor = found + len(word)
                continue
            log.debug("word %r not found in the notes text; falling back to a space", word)
        if out and i > 0:
            out.append((" ", None))
        out.append((word, value))
    if text is not None and cursor < len(text):  # trailing gap, or notes past the encoder's token limit
        out.append((text[cursor:], None))
    return out
