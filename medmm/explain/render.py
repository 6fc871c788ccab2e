"""Drawing explanations: heatmap overlays, PNG/array export, token highlights for the app.

``blend_overlay`` lays a heatmap over the film (numpy, at display size). ``overlay_array`` annotates that blend with
Pillow (title, colour bar, caption) in a few milliseconds: what the app shows on every request and what
``explain --out`` writes. ``overlay_figure`` puts the same blend in a matplotlib ``Figure`` for notebooks and papers
(~60-70 ms to draw, measured: too slow to pay on every request of a 2-core server). Only matplotlib's object API
(``Figure`` + the Agg canvas): pyplot keeps a process-wide "current figure" that concurrent requests would share.
Nothing here computes attributions (``medmm.explain`` does); these functions take plain numpy arrays.
"""

from __future__ import annotations

import functools
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

DEFAULT_CMAP = "inferno"  # perceptually uniform; its dark end fades into the film where the evidence is low
BAR_LABEL = "relative attribution (positive evidence)"


def _check_2d(scan: np.ndarray, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scan = np.asarray(scan, dtype=np.float32)
    heat = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    if scan.ndim != 2 or heat.ndim != 2:
        raise ValueError(f"expected 2-D scan and heatmap, got {scan.shape} and {heat.shape}")
    return scan, heat


@functools.lru_cache(maxsize=4)
def _lut(cmap: str) -> np.ndarray:
    """``[256, 3]`` float32 RGB of a matplotlib colour map (no pyplot)."""
    import matplotlib

    return np.asarray(matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3], dtype=np.float32)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float image ``a`` resized to ``size`` = (W, H): box filter when shrinking (no aliasing), bilinear else."""
    from PIL import Image

    if (a.shape[1], a.shape[0]) == size:
        return a
    shrink = size[0] < a.shape[1] or size[1] < a.shape[0]
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    return np.asarray(img.resize(size, Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR), np.float32)


def blend_overlay(scan_pixels: np.ndarray, heatmap: np.ndarray, size: tuple[int, int] | None = None, *,
                  cmap: str = DEFAULT_CMAP, max_alpha: float = 0.65) -> np.ndarray:
    """``[H, W, 3]`` uint8: the film in grey with ``heatmap`` (values in [0, 1], any shape) coloured over it.

    The heatmap is stretched over the film's full extent (the exact inverse of the pipeline's squash resize, so a
    model-grid map lines up). Opacity grows with the value (``max_alpha`` at 1), so regions without evidence show
    the film itself. ``size`` = (W, H) of the result (default: the film's own).
    """
    scan, heat = _check_2d(scan_pixels, heatmap)
    size = size or (scan.shape[1], scan.shape[0])
    grey = np.clip(_resize(scan, size), 0.0, 1.0)[..., None]
    heat = np.clip(_resize(heat, size), 0.0, 1.0)
    colour = _lut(cmap)[np.round(heat * 255).astype(np.intp)]
    alpha = (max_alpha * heat)[..., None]
    return np.round((grey * (1 - alpha) + colour * alpha) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    import matplotlib  # ships DejaVu Sans; nothing is fetched

    path = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:  # pragma: no cover - a matplotlib build without its fonts
        return ImageFont.load_default(size)


def overlay_array(scan_pixels: np.ndarray, heatmap: np.ndarray, title: str, *, caption: str | None = None,
                  cmap: str = DEFAULT_CMAP, max_alpha: float = 0.65, width_px: int = 600,
                  max_height_px: int = 800) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB: title, the film with ``heatmap`` over it (``blend_overlay``), a colour bar as tall
    as the image, and ``caption`` (may hold newlines) underneath; drawn with Pillow.

    The image keeps the film's aspect ratio: ``width_px`` wide at most, portrait films narrower so the whole
    picture stays within ``max_height_px``.
    """
    from PIL import Image, ImageDraw

    scan, heat = _check_2d(scan_pixels, heatmap)
    # sizes for a picture the app shows at about half its width: text stays readable scaled down
    title_font, small, tick_font = _font(24), _font(17), _font(15)
    lines = [] if not caption else caption.splitlines()
    pad, title_h, bar_w, bar_area, line_h = 12, 36, 18, 96, 22
    caption_h = (line_h * len(lines) + 8) if lines else 0
    h, w = scan.shape
    img_w = width_px - 2 * pad - bar_area
    img_h = max(1, round(img_w * h / w))
    room = max_height_px - (pad + title_h + caption_h + pad)
    if img_h > room:  # portrait film: narrower, not taller
        img_h, img_w = room, max(1, round(room * w / h))
    canvas = Image.new("RGB", (img_w + bar_area + 2 * pad, pad + title_h + img_h + caption_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    x0, y0 = pad, pad + title_h
    canvas.paste(Image.fromarray(blend_overlay(scan, heat, (img_w, img_h), cmap=cmap, max_alpha=max_alpha)),
                 (x0, y0))
    draw.text((x0 + img_w / 2, pad + title_h / 2), title, fill="black", font=title_font, anchor="mm")
    # colour bar: the map's scale, 1 at the top
    bx = x0 + img_w + 10
    ramp = (_lut(cmap)[np.linspace(255, 0, img_h).round().astype(np.intp)] * 255).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(ramp[:, None], bar_w, axis=1)), (bx, y0))
    draw.rectangle((bx, y0, bx + bar_w - 1, y0 + img_h - 1), outline="black")
    for value in (0.0, 0.5, 1.0):
        ty = y0 + round((1 - value) * (img_h - 1))
        draw.line((bx + bar_w, ty, bx + bar_w + 4, ty), fill="black")
        draw.text((bx + bar_w + 6, ty), f"{value:.1f}", fill="black", font=tick_font, anchor="lm")
    label = Image.new("L", (max(1, int(draw.textlength(BAR_LABEL, font=small))) + 4, 20), 255)
    ImageDraw.Draw(label).text((2, 10), BAR_LABEL, fill=0, font=small, anchor="lm")
    label = label.rotate(90, expand=True)
    if label.height <= img_h:
        canvas.paste(Image.new("RGB", label.size, "black"), (bx + bar_w + 40, y0 + (img_h - label.height) // 2),
                     Image.eval(label, lambda v: 255 - v))
    for i, line in enumerate(lines):
        draw.text((canvas.width / 2, y0 + img_h + 6 + line_h * i), line, fill="black", font=small, anchor="mt")
    return np.asarray(canvas)


def overlay_png(scan_pixels: np.ndarray, heatmap: np.ndarray, title: str, **kwargs) -> bytes:
    """PNG bytes of ``overlay_array`` (what ``explain --out`` writes as overlay.png)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(overlay_array(scan_pixels, heatmap, title, **kwargs)).save(buf, format="PNG")
    return buf.getvalue()


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

    scan, heat = _check_2d(scan_pixels, heatmap)
    h, w = scan.shape
    extent = (0, w, h, 0)  # pixel coordinates of the scan
    width_in = min(width_in, (max_height_in - 0.9) / (0.86 * h / w))  # portrait scans: narrower, not taller
    fig = Figure(figsize=(width_in, width_in * h / w * 0.86 + 0.9), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    display = (max(1, round(width_in * dpi)), max(1, round(width_in * dpi * h / w)))  # about the drawn size
    ax.imshow(blend_overlay(scan, heat, display, cmap=cmap, max_alpha=max_alpha), extent=extent,
              interpolation="antialiased")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=12)
    cax = ax.inset_axes([1.03, 0.0, 0.045, 1.0])  # axes coordinates: exactly the image's height
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), cax=cax)
    bar.set_label(BAR_LABEL, fontsize=9)
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
        value = float(np.clip(score, -1.0, 1.0)) if np.isfinite(score) else None  # NaN: a word with no evidence
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
