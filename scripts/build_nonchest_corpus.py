#!/usr/bin/env python3
"""Build a local corpus of images that are NOT frontal/lateral chest radiographs.

The corpus is used to measure how often the input gate refuses out-of-scope
images.  It is written OUTSIDE the repository (default ``/work/nonchest_corpus``)
and must never be committed: several sources are only publicly posted, not
permissively licensed.

Usage::

    python scripts/build_nonchest_corpus.py [OUT_DIR] [--sources DIR]
        [--chest-data DIR] [--seed N] [--only cat1,cat2]

Output: image files under ``OUT_DIR/<category>/`` (PNG/JPEG, or ``.dcm`` where
the source is DICOM) plus ``OUT_DIR/manifest.csv`` with the columns
``path,category,origin,license`` (``path`` relative to OUT_DIR).

Categories
----------
photo             natural / colour / grayscale photographs shipped inside PyPI
                  wheels (scikit-image ``skimage/data``, matplotlib
                  ``mpl-data/sample_data``), each with crops, rotations,
                  grayscale versions and resizes.  Needs scikit-image and/or
                  matplotlib installed; skipped with a message otherwise.
document          rendered document pages (letters, lab reports, tables, forms)
                  drawn with Pillow and Debian fonts (DejaVu / Liberation), with
                  skew, noise, blur and JPEG artefacts; plus skimage ``page`` /
                  ``text`` when scikit-image is present.
other_radiograph  REAL radiographs of other body parts (hand, wrist, forearm,
                  arm, shoulder, tibia).  These come from public GitHub
                  repositories that cannot be re-fetched in CI, so the script
                  copies them from a cache folder (default
                  ``/work/nonchest_sources/other_radiograph`` with its
                  ``sources.csv``).  When the cache is absent the category is
                  skipped with a message.  Multi-panel figures (montages) are
                  kept whole AND split into their panels.
ct_mr             CT / MR / ultrasound / nuclear-medicine slices: pydicom's
                  bundled test files (those that decode without extra plugins,
                  CR/DX/MG modalities excluded), written both as ``.dcm`` and as
                  windowed PNG exports; larger pydicom-data files from the cache
                  (``/work/nonchest_sources/pydicom-data``) when present;
                  nibabel's bundled NIfTI/MGH volumes sliced to PNG (needs
                  nibabel); matplotlib's ``s1045.ima.gz`` MR slice.
noise             synthetic images: noise, flat fields, gradients, checkerboards,
                  random shapes, blank white / black, at various sizes.
cropped_chest     small random crops (10-25 % of the area, never the whole
                  thorax) of chest films from ``<shared>/data/kermany224/train/
                  NORMAL`` and ``<shared>/data/nih_adult/images``, simulating
                  cropped journal figures.  Skipped when the data is absent.

The other_radiograph cache
--------------------------
``<sources>/other_radiograph/sources.csv`` has the columns
``file,repo,repo_path,body_part,dataset,license,kind`` (kind: image, montage or
dicom).  It was filled from these public repositories (``git show`` of the
listed paths from snapshots, never committed here):

* ``kismetpro/Medical-Bone-Age`` backend/test/147*.png - RSNA Pediatric Bone Age
  hand films (RSNA dataset terms, non-commercial research).
* ``mdciri/YOLOv7-Bone-Fracture-Detection`` predictions/*.png - GRAZPEDWRI-DX
  wrist films with predicted boxes drawn (CC BY 4.0).
* ``Alfaturachman/YOLOv8-Bone-Fracture-Hand-Detection`` *_samples.png,
  output.png, augmented_pairs_sample.png, sample_annotations_train.png -
  montages of FracAtlas hand/forearm/arm/leg/shoulder films (CC BY 4.0).
* ``pydicom/pydicom-data`` data_store/data/RG3_J2K?.dcm - CR of the distal
  tibia (NEMA/Clunie compression samples).  The same repository's other
  files fill ``<sources>/pydicom-data`` for ct_mr.

Only numpy, Pillow, pydicom and the standard library are imported at the top;
scikit-image, matplotlib and nibabel are looked up lazily, so the script also
runs with the project's own virtualenv (those parts are then skipped).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import math
import os
import random
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from medmm.io import RADIOGRAPH_MODALITIES
from medmm.training.data import SHARED_DATA

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("/work/nonchest_corpus")
DEFAULT_SOURCES = Path("/work/nonchest_sources")

CATEGORIES = ("photo", "document", "other_radiograph", "ct_mr", "noise", "cropped_chest")


def log(msg: str) -> None:
    print(msg, flush=True)


class Writer:
    """Saves images under OUT/<category>/ and collects manifest rows."""

    def __init__(self, out: Path):
        self.out = out
        self.rows: list[dict] = []
        self.names: set[str] = set()

    def _path(self, category: str, name: str) -> Path:
        base, ext = os.path.splitext(name)
        cand, i = f"{category}/{base}{ext}", 1
        while cand in self.names:
            i += 1
            cand = f"{category}/{base}_{i}{ext}"
        self.names.add(cand)
        p = self.out / cand
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def _add(self, p: Path, category: str, origin: str, license_: str) -> None:
        self.rows.append({"path": str(p.relative_to(self.out)), "category": category,
                          "origin": origin, "license": license_})

    def image(self, im: Image.Image, category: str, name: str, origin: str, license_: str,
              quality: int | None = None) -> None:
        p = self._path(category, name)
        if p.suffix.lower() in (".jpg", ".jpeg"):
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            im.save(p, quality=quality or 90)
        else:
            if im.mode not in ("L", "RGB", "RGBA", "I;16", "LA"):
                im = im.convert("RGB")
            im.save(p, optimize=True)
        self._add(p, category, origin, license_)

    def copy(self, src: Path, category: str, name: str, origin: str, license_: str) -> None:
        p = self._path(category, name)
        shutil.copyfile(src, p)
        self._add(p, category, origin, license_)

    def count(self, category: str) -> int:
        return sum(r["category"] == category for r in self.rows)


# --------------------------------------------------------------------------- helpers

def to_uint8(a: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if lo is None or hi is None:
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            return np.zeros(a.shape, np.uint8)
        lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)


def variants(im: Image.Image, rng: random.Random, n: int = 7):
    """Yield (suffix, image) augmentations: crops, rotations, grayscale, resizes."""
    w, h = im.size
    yield "orig", im
    yield "gray", ImageOps.grayscale(im)
    for k in range(2):
        f = rng.uniform(0.45, 0.75)
        cw, ch = max(16, int(w * f)), max(16, int(h * f))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        yield f"crop{k}", im.crop((x, y, x + cw, y + ch))
    yield "rot90", im.rotate(90, expand=True)
    ang = rng.choice([-25, -12, 12, 25])
    yield f"rot{ang}", im.rotate(ang, expand=True, fillcolor=0 if im.mode == "L" else (0, 0, 0))
    s = rng.choice([0.35, 0.5, 1.6])
    yield f"resize{s}", im.resize((max(16, int(w * s)), max(16, int(h * s))), Image.BICUBIC)
    if n > 7:
        yield "flip", ImageOps.mirror(ImageOps.grayscale(im) if rng.random() < 0.5 else im)


def site_packages_file(module: str, *parts: str) -> Path | None:
    try:
        mod = __import__(module)
    except Exception as exc:  # noqa: BLE001
        log(f"  [skip] {module} not importable ({type(exc).__name__}: {exc})")
        return None
    p = Path(mod.__file__).parent.joinpath(*parts)
    return p if p.exists() else None


# --------------------------------------------------------------------------- photo

SKIMAGE_PHOTOS = {
    # file: (description, licence per skimage.data docstrings)
    "astronaut.png": ("Eileen Collins, NASA", "public domain (NASA)"),
    "camera.png": ("cameraman", "CC0 / public domain (skimage.data)"),
    "coffee.png": ("coffee cup, Rachel Michetti", "CC0 (skimage.data)"),
    "chelsea.png": ("Chelsea the cat, Stefan van der Walt", "CC0 (skimage.data)"),
    "coins.png": ("Greek coins, Brooklyn Museum", "public domain (skimage.data)"),
    "moon.png": ("lunar surface", "public domain (skimage.data)"),
    "horse.png": ("horse silhouette, openclipart", "public domain (skimage.data)"),
    "rocket.jpg": ("SpaceX Falcon 9 launch", "CC0 / public domain (skimage.data)"),
    "hubble_deep_field.jpg": ("Hubble eXtreme Deep Field, NASA", "public domain (NASA)"),
    "retina.jpg": ("human retina fundus photograph", "CC BY 4.0 (skimage.data, Häggström)"),
    "ihc.png": ("immunohistochemistry microscopy", "public domain (skimage.data)"),
    "cell.png": ("cell microscopy", "CC0 (skimage.data)"),
    "grass.png": ("grass texture", "CC0 (skimage.data)"),
    "gravel.png": ("gravel texture", "CC0 (skimage.data)"),
    "brick.png": ("brick wall texture", "CC0 (skimage.data)"),
    "motorcycle_left.png": ("Middlebury stereo motorcycle", "see skimage.data docs (Middlebury, research use)"),
    "clock_motion.png": ("clock with motion blur", "CC0 (skimage.data)"),
    "color.png": ("colour test chart", "CC0 (skimage.data)"),
    "microaneurysms.png": ("retina microaneurysms crop", "CC BY 4.0 (skimage.data)"),
}


def build_photo(w: Writer, rng: random.Random) -> None:
    sk = site_packages_file("skimage", "data")
    if sk is not None:
        for fname, (desc, lic) in SKIMAGE_PHOTOS.items():
            f = sk / fname
            if not f.exists():
                log(f"  [skip] skimage data file missing: {fname}")
                continue
            im = Image.open(f)
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
            base = Path(fname).stem
            for suf, v in variants(im, rng, n=8 if im.mode == "RGB" else 7):
                ext = ".jpg" if rng.random() < 0.5 else ".png"
                w.image(v, "photo", f"skimage_{base}_{suf}{ext}",
                        f"scikit-image wheel skimage/data/{fname} ({desc}); variant={suf}", lic)
        lfw = sk / "lfw_subset.npy"
        if lfw.exists():
            faces = np.load(lfw)
            for i in range(0, min(len(faces), 200), 40):
                im = Image.fromarray(to_uint8(faces[i], 0, 1)).resize((200, 200), Image.BICUBIC)
                w.image(im, "photo", f"skimage_lfw_face_{i:03d}.png",
                        f"scikit-image wheel skimage/data/lfw_subset.npy[{i}] (LFW face, upscaled)",
                        "LFW: research use (skimage.data)")
    mpl = site_packages_file("matplotlib", "mpl-data", "sample_data")
    if mpl is not None:
        for fname, desc, lic in (
            ("grace_hopper.jpg", "Grace Hopper portrait, US Navy", "public domain (US Navy)"),
            ("Minduka_Present_Blue_Pack.png", "photo of a gift box (Minduka)", "CC0 (matplotlib sample data)"),
        ):
            f = mpl / fname
            if not f.exists():
                continue
            im = Image.open(f).convert("RGB")
            for suf, v in variants(im, rng, n=8):
                w.image(v, "photo", f"mpl_{Path(fname).stem}_{suf}.jpg",
                        f"matplotlib wheel mpl-data/sample_data/{fname} ({desc}); variant={suf}", lic)
    if w.count("photo") == 0:
        log("  [skip] photo: neither scikit-image nor matplotlib data available")


# --------------------------------------------------------------------------- document

FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation")]

LOREM = (
    "The committee reviewed the quarterly figures and agreed that the proposed schedule "
    "should be adopted without further amendment. Members noted that the budget remained "
    "within the approved limits, although several items require clarification before the "
    "next meeting. The chair thanked the staff for their careful preparation of the reports "
    "and asked that the revised timetable be circulated to all departments by the end of the "
    "month. Any objections should be submitted in writing to the secretary. "
)


def _fonts() -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {"regular": [], "bold": [], "mono": []}
    for d in FONT_DIRS:
        if not d.exists():
            continue
        for f in sorted(d.glob("*.ttf")):
            n = f.name.lower()
            if "mono" in n:
                out["mono"].append(f)
            elif "bold" in n and "italic" not in n and "oblique" not in n:
                out["bold"].append(f)
            elif not any(k in n for k in ("bold", "italic", "oblique", "light")):
                out["regular"].append(f)
    return out


def _font(paths: list[Path], size: int):
    if paths:
        return ImageFont.truetype(str(paths[0] if len(paths) == 1 else random.choice(paths)), size)
    return ImageFont.load_default()


def _wrap_para(draw, xy, text, font, width_px, fill, spacing=6) -> int:
    x, y = xy
    avg = max(1, int(draw.textlength("abcdefghijklmnopqrstuvwxyz", font=font) / 26))
    for line in textwrap.wrap(text, width=max(10, width_px // avg)):
        draw.text((x, y), line, font=font, fill=fill)
        y += font.size + spacing
    return y


def render_page(kind: str, rng: random.Random, fonts) -> Image.Image:
    W, H = rng.choice([(850, 1100), (1240, 1754), (1000, 1300), (1100, 850)])
    paper = rng.choice([255, 250, 245, 238])
    im = Image.new("L", (W, H), paper)
    d = ImageDraw.Draw(im)
    m = int(W * rng.uniform(0.07, 0.12))
    body = _font(fonts["regular"], int(W / rng.uniform(52, 70)))
    bold = _font(fonts["bold"] or fonts["regular"], int(body.size * 1.5))
    mono = _font(fonts["mono"] or fonts["regular"], body.size)
    ink = rng.randint(0, 50)
    y = m
    if kind == "letter":
        d.text((m, y), "Northfield Regional Services", font=bold, fill=ink); y += bold.size + 8
        d.text((m, y), "14 Station Road, Millbrook  -  Tel. 0100 555 0199", font=body, fill=ink); y += 3 * body.size
        d.text((m, y), f"{rng.randint(1, 28)} March {rng.randint(2009, 2024)}", font=body, fill=ink); y += 2 * body.size
        d.text((m, y), "Dear Ms Thompson,", font=body, fill=ink); y += 2 * body.size
        for _ in range(rng.randint(3, 5)):
            y = _wrap_para(d, (m, y), LOREM[: rng.randint(200, len(LOREM))], body, W - 2 * m, ink) + body.size
        d.text((m, y), "Yours sincerely,", font=body, fill=ink); y += 3 * body.size
        d.text((m, y), "J. A. Whitaker, Director", font=body, fill=ink)
    elif kind == "lab":
        d.text((m, y), "LABORATORY REPORT - CLINICAL CHEMISTRY", font=bold, fill=ink); y += bold.size + 12
        d.text((m, y), f"Specimen ID: {rng.randint(100000, 999999)}    Collected: 08:{rng.randint(10, 59)}",
               font=body, fill=ink); y += 2 * body.size
        cols = [m, int(W * 0.42), int(W * 0.6), int(W * 0.78)]
        for c, t in zip(cols, ("Test", "Result", "Units", "Reference")):
            d.text((c, y), t, font=bold if bold.size < 40 else body, fill=ink)
        y += int(body.size * 1.8)
        d.line((m, y - 6, W - m, y - 6), fill=ink, width=2)
        tests = [("Sodium", "mmol/L", "135-145"), ("Potassium", "mmol/L", "3.5-5.1"), ("Urea", "mmol/L", "2.5-7.8"),
                 ("Creatinine", "umol/L", "60-110"), ("Glucose", "mmol/L", "3.9-6.1"), ("ALT", "U/L", "7-56"),
                 ("Bilirubin", "umol/L", "3-21"), ("CRP", "mg/L", "<5"), ("Haemoglobin", "g/L", "130-170"),
                 ("WBC", "10^9/L", "4.0-11.0"), ("Platelets", "10^9/L", "150-400"), ("TSH", "mU/L", "0.4-4.0")]
        for name, unit, ref in tests[: rng.randint(8, len(tests))]:
            val = f"{rng.uniform(0.5, 150):.1f}"
            for c, t in zip(cols, (name, val, unit, ref)):
                d.text((c, y), t, font=mono if c != m else body, fill=ink)
            y += int(body.size * 1.7)
        y += body.size
        _wrap_para(d, (m, y), "Comment: results reviewed and authorised. " + LOREM[:180], body, W - 2 * m, ink)
    elif kind == "table":
        d.text((m, y), "Table 2. Summary of outcomes by group", font=bold, fill=ink); y += bold.size + 16
        ncol, nrow = rng.randint(4, 7), rng.randint(10, 22)
        cw = (W - 2 * m) // ncol
        rh = int(body.size * 1.8)
        for r in range(nrow + 1):
            d.line((m, y + r * rh, m + ncol * cw, y + r * rh), fill=ink, width=2 if r in (0, 1) else 1)
            for c in range(ncol):
                t = f"Group {c}" if r == 0 else (f"Item {r}" if c == 0 else f"{rng.uniform(0, 99):.2f}")
                d.text((m + c * cw + 6, y + r * rh + 4), t, font=body, fill=ink)
        if rng.random() < 0.6:
            for c in range(ncol + 1):
                d.line((m + c * cw, y, m + c * cw, y + nrow * rh), fill=ink, width=1)
        y += (nrow + 1) * rh + body.size
        _wrap_para(d, (m, y), "Values are means. " + LOREM[:300], body, W - 2 * m, ink)
    elif kind == "form":
        d.text((m, y), "APPLICATION FORM", font=bold, fill=ink); y += bold.size + 20
        for label in ("Surname", "Given names", "Date of birth", "Address", "Postcode", "Telephone",
                      "Email", "Occupation", "Signature", "Date"):
            d.text((m, y), label + ":", font=body, fill=ink)
            d.rectangle((int(W * 0.35), y - 4, W - m, y + body.size + 6), outline=ink, width=1)
            y += int(body.size * 2.6)
        for i in range(3):
            d.rectangle((m, y, m + body.size, y + body.size), outline=ink, width=2)
            d.text((m + 2 * body.size, y), f"I agree to condition {i + 1}", font=body, fill=ink)
            y += int(body.size * 2)
    else:  # article: two columns of prose
        d.text((m, y), "A study of regional planning outcomes", font=bold, fill=ink); y += bold.size + 20
        colw = (W - 3 * m // 2) // 2
        for col in range(2):
            yy = y
            x = m + col * (colw + m // 2)
            while yy < H - m - 4 * body.size:
                yy = _wrap_para(d, (x, yy), LOREM, body, colw, ink) + body.size // 2
    return im


def degrade(im: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    steps = []
    if rng.random() < 0.7:
        ang = rng.uniform(-4, 4)
        im = im.rotate(ang, expand=True, fillcolor=rng.randint(180, 255))
        steps.append(f"skew{ang:.1f}")
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
        steps.append("blur")
    if rng.random() < 0.6:
        a = np.asarray(im, dtype=np.float32)
        a += np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, rng.uniform(3, 14), a.shape)
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        steps.append("noise")
    if rng.random() < 0.3:
        tint = rng.choice([(255, 250, 235), (245, 245, 255), (255, 245, 245)])
        im = ImageOps.colorize(im, black=(20, 20, 30), white=tint)
        steps.append("tint")
    if rng.random() < 0.5:
        s = rng.uniform(0.4, 0.8)
        im = im.resize((int(im.width * s), int(im.height * s)), Image.BILINEAR)
        steps.append(f"scale{s:.2f}")
    return im, "+".join(steps) or "clean"


def build_document(w: Writer, rng: random.Random, n: int = 60) -> None:
    fonts = _fonts()
    if not any(fonts.values()):
        log("  [warn] no Debian TrueType fonts found; using Pillow's default bitmap font")
    kinds = ["letter", "lab", "table", "form", "article"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        im, how = degrade(render_page(kind, rng, fonts), rng)
        jpeg = rng.random() < 0.6
        q = rng.randint(35, 85)
        w.image(im, "document", f"doc_{i:03d}_{kind}.{'jpg' if jpeg else 'png'}",
                f"rendered by build_nonchest_corpus.py ({kind}; {how}{'; jpeg q=%d' % q if jpeg else ''})",
                "generated (no third-party content; fonts DejaVu/Liberation, free licences)", quality=q)
    sk = site_packages_file("skimage", "data")
    if sk is not None:
        for fname in ("page.png", "text.png"):
            f = sk / fname
            if f.exists():
                im = Image.open(f)
                for suf, v in list(variants(im, rng, n=7))[:4]:
                    w.image(v, "document", f"skimage_{Path(fname).stem}_{suf}.png",
                            f"scikit-image wheel skimage/data/{fname}; variant={suf}",
                            "public domain / CC0 (skimage.data)")


# --------------------------------------------------------------------------- other_radiograph

def _split_panels(im: Image.Image, min_side: int = 150, bg_thresh: int = 245):
    """Split a figure montage on a white background into panel boxes."""
    a = np.asarray(im.convert("L"), dtype=np.uint8)
    fg = a < bg_thresh

    def runs(mask, minlen):
        out, start = [], None
        for i, v in enumerate(list(mask) + [False]):
            if v and start is None:
                start = i
            elif not v and start is not None:
                if i - start >= minlen:
                    out.append((start, i))
                start = None
        return out

    boxes = []
    for r0, r1 in runs(fg.mean(1) > 0.02, min_side):
        band = fg[r0:r1]
        for c0, c1 in runs(band.mean(0) > 0.05, min_side):
            for s0, s1 in runs(fg[r0:r1, c0:c1].mean(1) > 0.05, min_side):
                boxes.append((c0, r0 + s0, c1, r0 + s1))
    return boxes


def dicom_to_png(ds) -> list[np.ndarray]:
    """Return 8-bit slices of a dataset (multi-frame -> up to 3 frames)."""
    arr = ds.pixel_array
    photometric = str(getattr(ds, "PhotometricInterpretation", ""))
    if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] in (3, 4) and "MONO" not in photometric):
        frames = [arr] if arr.ndim == 3 else [arr[i] for i in range(min(3, arr.shape[0]))]
        return [np.asarray(f[..., :3], dtype=np.uint8) if f.dtype == np.uint8 else to_uint8(f[..., :3]) for f in frames]
    frames = [arr] if arr.ndim == 2 else [arr[i] for i in np.linspace(0, arr.shape[0] - 1, min(3, arr.shape[0])).astype(int)]
    out = []
    for f in frames:
        f = f.astype(np.float64)
        slope, inter = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
        f = f * slope + inter
        wc, ww = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
        if wc is not None and ww is not None:
            wc = float(wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc)
            ww = float(ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww)
            g = to_uint8(f, wc - ww / 2, wc + ww / 2)
        else:
            g = to_uint8(f)
        if photometric == "MONOCHROME1":
            g = 255 - g
        out.append(g)
    return out


def build_other_radiograph(w: Writer, rng: random.Random, sources: Path) -> None:
    d = sources / "other_radiograph"
    meta = d / "sources.csv"
    if not meta.exists():
        log(f"  [skip] other_radiograph: cache {meta} not found. Fill {d} from the public repositories "
            "listed in the docstring / PROVENANCE (they cannot be fetched from CI).")
        return
    with open(meta, newline="") as fh:
        for row in csv.DictReader(fh):
            src = d / row["file"]
            if not src.exists():
                log(f"  [warn] missing cached file {src}")
                continue
            origin = f"{row['repo']}:{row['repo_path']} ({row['body_part']}; {row['dataset']})"
            lic = row["license"]
            stem = src.stem
            if src.suffix.lower() == ".dcm":
                w.copy(src, "other_radiograph", src.name, origin, lic)
                try:
                    ds = pydicom.dcmread(src)
                    for k, g in enumerate(dicom_to_png(ds)):
                        w.image(Image.fromarray(g), "other_radiograph", f"{stem}_export{k}.png",
                                origin + "; windowed PNG export", lic)
                except Exception as exc:  # noqa: BLE001
                    log(f"  [warn] cannot decode {src.name}: {type(exc).__name__}: {exc}")
                continue
            im = Image.open(src)
            im = im.convert("RGB") if im.mode in ("RGBA", "P", "LA") else im
            w.image(im, "other_radiograph", src.name, origin, lic)
            if row.get("kind") == "montage":
                for k, box in enumerate(_split_panels(im)):
                    note = row.get(f"panel{k}", "")
                    w.image(im.crop(box), "other_radiograph", f"{stem}_panel{k:02d}.png",
                            origin + f"; panel {k} box={box}{'; ' + note if note else ''}", lic)
            else:
                g = ImageOps.grayscale(im)
                if max(g.size) > 1024:
                    g.thumbnail((1024, 1024))
                w.image(g, "other_radiograph", f"{stem}_gray.jpg", origin + "; grayscale <=1024px JPEG", lic,
                        quality=85)


# --------------------------------------------------------------------------- ct_mr

# projection radiographs (the chest modalities medmm reads, plus mammography, panoramic and intra-oral)
EXCLUDED_MODALITIES = RADIOGRAPH_MODALITIES - {"OT", "SC"} | {"MG", "PX", "IO"}


def _dicom_slices(w: Writer, files, origin_prefix: str, lic: str, seen: set, copy_dcm: bool = True) -> None:
    for f in files:
        f = Path(f)
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(f)
            mod = str(getattr(ds, "Modality", "") or "")
            if mod in EXCLUDED_MODALITIES or mod in ("SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR"):
                continue
            if "PixelData" not in ds:
                continue
            slices = dicom_to_png(ds)
        except Exception:  # noqa: BLE001 - undecodable without extra plugins: skip
            continue
        if not slices or min(slices[0].shape[:2]) < 32:
            continue
        key = (slices[0].shape, int(slices[0].astype(np.int64).sum()))
        if key in seen:
            continue
        seen.add(key)
        origin = f"{origin_prefix}/{f.name} (modality {mod or '?'})"
        # OT / unknown-modality files are synthetic test patterns: file them under noise
        cat = "ct_mr" if mod in ("CT", "MR", "US", "NM", "PT", "XA", "RF", "OP") else "noise"
        if copy_dcm:
            w.copy(f, cat, f.name if f.suffix == ".dcm" else f.name + ".dcm", origin, lic)
        for k, g in enumerate(slices):
            w.image(Image.fromarray(g), cat, f"{f.stem}_export{k}.png", origin + "; windowed PNG export", lic)


def build_ct_mr(w: Writer, rng: random.Random, sources: Path) -> None:
    seen: set = set()
    try:
        from pydicom.data import get_testdata_files
        files = [f for f in get_testdata_files() if Path(f).is_file()]
        _dicom_slices(w, files, "pydicom wheel pydicom/data/test_files", "pydicom test data (MIT/public test files)",
                      seen)
    except Exception as exc:  # noqa: BLE001
        log(f"  [skip] pydicom bundled test files: {exc}")
    cache = sources / "pydicom-data"
    if cache.exists():
        _dicom_slices(w, sorted(cache.glob("*.dcm")), "github pydicom/pydicom-data data_store/data",
                      "pydicom-data (MIT repo; public DICOM test files)", seen)
    else:
        log(f"  [skip] pydicom-data cache {cache} not found")
    mpl = site_packages_file("matplotlib", "mpl-data", "sample_data")
    if mpl is not None and (mpl / "s1045.ima.gz").exists():
        raw = gzip.open(mpl / "s1045.ima.gz").read()
        a = np.frombuffer(raw, np.uint16).astype(np.float64)
        side = int(math.isqrt(a.size))
        g = to_uint8(a[: side * side].reshape(side, side))
        for suf, v in (("", Image.fromarray(g)), ("_big", Image.fromarray(g).resize((512, 512), Image.BICUBIC))):
            w.image(v, "ct_mr", f"mpl_s1045_mr{suf}.png",
                    "matplotlib wheel mpl-data/sample_data/s1045.ima.gz (MR brain slice)", "matplotlib sample data")
    try:
        import nibabel as nib  # noqa: PLC0415
        data_path = Path(nib.__file__).parent / "tests" / "data"
        for fname in ("anatomical.nii", "example4d.nii.gz", "functional.nii", "standard.nii.gz", "test.mgz",
                      "example_nifti2.nii.gz"):
            f = Path(data_path) / fname
            if not f.exists():
                continue
            try:
                vol = np.asarray(nib.load(str(f)).dataobj, dtype=np.float64)
            except Exception:  # noqa: BLE001
                continue
            while vol.ndim > 3:
                vol = vol[..., 0]
            if vol.ndim != 3 or min(vol.shape) < 4:
                continue
            for ax in range(3):
                sl = np.take(vol, vol.shape[ax] // 2, axis=ax)
                sl = np.rot90(sl)
                if min(sl.shape) < 16:
                    continue
                im = Image.fromarray(to_uint8(sl))
                if max(im.size) < 256:
                    s = 256 / max(im.size)
                    im = im.resize((int(im.width * s), int(im.height * s)), Image.NEAREST)
                w.image(im, "ct_mr", f"nibabel_{fname.split('.')[0]}_axis{ax}.png",
                        f"nibabel wheel nibabel/tests/data/{fname} middle slice axis {ax}", "nibabel test data (MIT)")
    except ImportError:
        log("  [skip] nibabel not installed: no NIfTI slices")
    sk = site_packages_file("skimage", "data")
    if sk is not None and (sk / "phantom.png").exists():
        w.image(Image.open(sk / "phantom.png").convert("L"), "ct_mr", "skimage_shepp_logan_phantom.png",
                "scikit-image wheel skimage/data/phantom.png (Shepp-Logan CT phantom)", "public domain (skimage.data)")


# --------------------------------------------------------------------------- noise

def build_noise(w: Writer, rng: random.Random) -> None:
    nrng = np.random.default_rng(rng.randint(0, 1 << 30))
    sizes = [(224, 224), (512, 512), (1024, 768), (300, 900), (64, 64), (2048, 2048), (800, 600)]
    lic = "generated"

    def save(a, name, desc):
        w.image(Image.fromarray(a), "noise", name, f"synthetic: {desc}", lic)

    for i, (W, H) in enumerate(sizes):
        save(nrng.integers(0, 256, (H, W), dtype=np.uint8), f"uniform_gray_{W}x{H}.png", "uniform noise gray")
        save(nrng.integers(0, 256, (H, W, 3), dtype=np.uint8), f"uniform_rgb_{W}x{H}.png", "uniform noise RGB")
        sd = rng.choice([10, 30, 60])
        save(np.clip(nrng.normal(128, sd, (H, W)), 0, 255).astype(np.uint8), f"gauss_sd{sd}_{W}x{H}.png",
             f"gaussian noise sd={sd}")
        lvl = rng.choice([32, 96, 128, 200])
        save(np.full((H, W), lvl, np.uint8), f"flat_{lvl}_{W}x{H}.png", f"flat gray {lvl}")
        xx = np.linspace(0, 255, W)[None, :].repeat(H, 0)
        yy = np.linspace(0, 255, H)[:, None].repeat(W, 1)
        g = [xx, yy, (xx + yy) / 2, np.hypot(xx - 127, yy - 127) * 1.4][i % 4]
        save(np.clip(g, 0, 255).astype(np.uint8), f"gradient{i % 4}_{W}x{H}.png", "linear/radial gradient")
        c = rng.choice([8, 16, 32, 64])
        cb = (((np.arange(H)[:, None] // c) + (np.arange(W)[None, :] // c)) % 2 * 255).astype(np.uint8)
        save(cb, f"checker{c}_{W}x{H}.png", f"checkerboard cell={c}")
        im = Image.new("RGB" if i % 2 else "L", (W, H), (255, 255, 255) if i % 2 else 0)
        d = ImageDraw.Draw(im)
        for _ in range(rng.randint(5, 40)):
            x0, y0 = rng.randint(0, W), rng.randint(0, H)
            x1, y1 = x0 + rng.randint(5, W // 2 + 5), y0 + rng.randint(5, H // 2 + 5)
            col = tuple(rng.randint(0, 255) for _ in range(3)) if i % 2 else rng.randint(0, 255)
            getattr(d, rng.choice(["rectangle", "ellipse"]))((x0, y0, x1, y1), fill=col)
            d.line((rng.randint(0, W), rng.randint(0, H), rng.randint(0, W), rng.randint(0, H)), fill=col, width=3)
        save(np.asarray(im), f"shapes_{W}x{H}.png", "random shapes")
    for W, H in ((512, 512), (1024, 1024), (224, 224)):
        save(np.full((H, W), 255, np.uint8), f"blank_white_{W}.png", "blank white")
        save(np.zeros((H, W), np.uint8), f"blank_black_{W}.png", "blank black")
    # blurred noise looks a little like soft tissue: a harder case
    for k in range(4):
        a = nrng.normal(0, 1, (256, 256))
        im = Image.fromarray(to_uint8(a)).resize((1024, 1024), Image.BICUBIC).filter(
            ImageFilter.GaussianBlur(rng.uniform(4, 20)))
        save(np.asarray(ImageOps.autocontrast(im)), f"smooth_noise_{k}.png", "low-frequency smoothed noise")


# --------------------------------------------------------------------------- cropped_chest

def build_cropped_chest(w: Writer, rng: random.Random, chest_root: Path, n_per_source: int = 25) -> None:
    srcs = [
        (chest_root / "kermany224" / "train" / "NORMAL", "Kermany 2018 pediatric CXR (CC BY 4.0)"),
        (chest_root / "nih_adult" / "images", "NIH ChestX-ray14 (public domain / NIH CC0-like terms)"),
    ]
    for d, lic in srcs:
        if not d.exists():
            log(f"  [skip] cropped_chest source {d} not found")
            continue
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        for f in rng.sample(files, min(n_per_source, len(files))):
            im = Image.open(f)
            im = im.convert("L") if im.mode not in ("L", "RGB") else im
            W, H = im.size
            frac = rng.uniform(0.10, 0.25)
            aspect = rng.uniform(0.6, 1.6)
            cw = int(min(W, math.sqrt(frac * W * H * aspect)))
            ch = int(min(H, frac * W * H / max(cw, 1)))
            # bias the crop away from the centre so it never shows the whole thorax
            corner = rng.choice(["tl", "tr", "bl", "br", "top", "bottom", "left", "right"])
            x = {"tl": 0, "bl": 0, "left": 0, "tr": W - cw, "br": W - cw, "right": W - cw}.get(
                corner, rng.randint(0, W - cw))
            y = {"tl": 0, "tr": 0, "top": 0, "bl": H - ch, "br": H - ch, "bottom": H - ch}.get(
                corner, rng.randint(0, H - ch))
            x = min(max(0, x + rng.randint(-W // 20, W // 20)), W - cw)
            y = min(max(0, y + rng.randint(-H // 20, H // 20)), H - ch)
            crop = im.crop((x, y, x + cw, y + ch))
            tag = d.parent.name if d.name == "NORMAL" else d.parent.name
            w.image(crop, "cropped_chest", f"{tag}_{f.stem}_crop.png",
                    f"{d}/{f.name} crop box=({x},{y},{x + cw},{y + ch}) area={cw * ch / (W * H):.2f} ({corner})", lic)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT))
    ap.add_argument("--sources", default=str(DEFAULT_SOURCES), help="cache of fetched third-party files")
    ap.add_argument("--chest-data", default=None, help="folder holding kermany224/ and nih_adult/")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--only", default="", help="comma-separated subset of categories")
    args = ap.parse_args(argv)

    out = Path(args.out).resolve()
    if REPO_ROOT in out.parents or out == REPO_ROOT:
        ap.error("refusing to write the corpus inside the repository")
    cats = [c for c in (args.only.split(",") if args.only else CATEGORIES) if c]
    for c in cats:
        if c not in CATEGORIES:
            ap.error(f"unknown category {c}")
        if (out / c).exists():
            shutil.rmtree(out / c)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    random.seed(args.seed)
    w = Writer(out)
    sources, chest = Path(args.sources), Path(args.chest_data or SHARED_DATA)
    builders = {
        "photo": lambda: build_photo(w, rng),
        "document": lambda: build_document(w, rng),
        "other_radiograph": lambda: build_other_radiograph(w, rng, sources),
        "ct_mr": lambda: build_ct_mr(w, rng, sources),
        "noise": lambda: build_noise(w, rng),
        "cropped_chest": lambda: build_cropped_chest(w, rng, chest),
    }
    for c in cats:
        log(f"[{c}]")
        builders[c]()
        log(f"  -> {w.count(c)} files")
    # keep rows of categories not rebuilt this time
    manifest = out / "manifest.csv"
    old = []
    if manifest.exists() and args.only:
        with open(manifest, newline="") as fh:
            old = [r for r in csv.DictReader(fh) if r["category"] not in cats]
    with open(manifest, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["path", "category", "origin", "license"])
        wr.writeheader()
        wr.writerows(old + w.rows)
    total = len(old) + len(w.rows)
    log(f"wrote {total} entries to {manifest}")
    for c in CATEGORIES:
        log(f"  {c:17s} {sum(r['category'] == c for r in old + w.rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
