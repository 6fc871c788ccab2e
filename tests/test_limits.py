"""Bounded memory per request (issue 14): header budgets per file and per request, downsampling on load.

The big images are real files (a 9999 x 9999 PNG of ~1 MB, as in the issue) loaded in a fresh interpreter so that
its peak RSS (ru_maxrss) measures this load alone."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import medmm.io as mio
from medmm.io import ScanError, load_scan, load_scans

ROOT = Path(__file__).resolve().parents[1]


def gray_png(width: int, height: int) -> bytes:
    """An 8-bit grayscale PNG of a diagonal ramp, compressed row by row (never whole in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    base = np.arange(width, dtype=np.int64)
    comp = zlib.compressobj(1)
    body = [comp.compress(b"\x00" + ((base + r) % 251).astype(np.uint8).tobytes()) for r in range(height)]
    body.append(comp.flush())
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b"")


_PROBE = """
import json, resource, sys, time
from medmm.io import ScanError, load_scans
from medmm.config import Preprocessing
from medmm.models.transforms import to_model_input
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
out = {}
try:
    scan = load_scans([sys.argv[1]])[0]
    to_model_input(scan.pixels, Preprocessing())
    out.update(shape=list(scan.pixels.shape), notes=list(scan.metadata.notes), rows=scan.metadata.rows)
except ScanError as exc:
    out["error"] = str(exc)
out["seconds"] = time.perf_counter() - t
out["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(out))
"""


def _probe(path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_9999_square_png_is_refused_from_its_header_fast_and_small(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(gray_png(9999, 9999))
    assert path.stat().st_size < 2_000_000
    r = _probe(path)
    assert "too large (9999x9999)" in r["error"] and "50 megapixels" in r["error"]
    assert r["seconds"] < 5 and r["rss_growth_mb"] < 1024


@pytest.mark.slow
def test_7000_square_png_is_downsampled_in_bounded_time_and_memory(tmp_path: Path) -> None:
    path = tmp_path / "large.png"
    path.write_bytes(gray_png(7000, 7000))   # 49 MP: just under the per-file budget
    r = _probe(path)
    assert r["shape"] == [1750, 1750] and r["rows"] == 7000
    assert any("downsampled from 7000x7000 to 1750x1750" in n for n in r["notes"])
    assert r["seconds"] < 10 and r["rss_growth_mb"] < 1024


def test_downsampling_is_an_area_average(monkeypatch) -> None:
    monkeypatch.setattr(mio.limits, "MAX_SIDE_PX", 64)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 256), dtype=np.uint8)
    from PIL import Image
    import io as _io

    buf = _io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    scan = load_scan(buf.getvalue())
    k = 4  # ceil(256 / 64)
    assert scan.pixels.shape == (50, 64)
    expected = img.reshape(50, k, 64, k).astype(np.float64).mean(axis=(1, 3)) / 255.0
    assert np.abs(scan.pixels - expected).max() <= 1 / 255 + 1e-6
    assert (scan.metadata.rows, scan.metadata.columns) == (200, 256)
    # 16-bit and numpy strip reduction agree with a plain block mean too (edges averaged over what they have)
    arr = rng.integers(0, 4096, (130, 70)).astype(np.uint16)
    red = mio.pixels._block_reduce(arr, 4)
    assert red.shape == (33, 18)
    assert np.allclose(red[:32, :17], arr[:128, :68].reshape(32, 4, 17, 4).mean(axis=(1, 3)))
    assert np.isclose(red[32, 17], arr[128:, 68:].mean())


def test_request_budgets_from_headers(monkeypatch, tmp_path: Path) -> None:
    small = gray_png(2000, 2000)                           # 4 MP each
    monkeypatch.setattr(mio.limits, "MAX_REQUEST_PIXELS", 10_000_000)
    with pytest.raises(ScanError, match="too large together"):
        load_scans([small, small, small])                  # 12 MP > 10 MP, refused before any decode
    assert len(load_scans([small, small])) == 2
    monkeypatch.setattr(mio.limits, "MAX_REQUEST_BYTES", len(small) + 10)
    path = tmp_path / "a.png"
    path.write_bytes(small)
    with pytest.raises(ScanError, match="larger than"):
        load_scans([path, path])
    assert mio.header_pixels(small) == 4_000_000 and mio.header_pixels(b"not an image") == 0


@pytest.mark.slow
@pytest.mark.parametrize("name, match", [
    ("jpeg_sof_40000.dcm", "compressed image inside the DICOM file is too large (40000x40000)"),
    ("deflate_bomb_2gb.dcm", "inflates to more than the 200 MB limit"),
])
def test_dicom_bombs_are_refused_in_bounded_memory(tmp_path: Path, name: str, match: str) -> None:
    """Issue 29: 7.6 GB and 4 GB before; the per-file peak-RSS figures live in scripts/attack.py (docs/bench.md)."""
    from tests.make_bad_inputs import _BUILDERS

    path = tmp_path / name
    path.write_bytes(_BUILDERS[name]())
    r = _probe(path)
    assert match in r["error"]
    assert r["seconds"] < 30 and r["rss_growth_mb"] < 1024
