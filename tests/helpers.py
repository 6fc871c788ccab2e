"""Shared test helpers (paths to ../shared, the app as a server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from medmm.training.data import SHARED_DATA  # ../shared/data, or $MEDMM_SHARED_DATA: the one definition

ROOT = Path(__file__).resolve().parents[1]


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (see shared/README.md)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:  # up, but e.g. 401 behind a login
        return True
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_app(log_path: Path, env: dict[str, str] | None = None,
                timeout_s: float = 240) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python app.py`` on a free localhost port, its output in ``log_path``: yields ``(url, process)`` once it
    answers and stops it afterwards (if the test has not). ``GRADIO_TEMP_DIR`` is dropped, so the app makes its
    own private cache folder (under ``MEDMM_CACHE_DIR`` when ``env`` sets one)."""
    port = free_port()
    full = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
            "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    full.pop("GRADIO_TEMP_DIR", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(url):
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with code {proc.returncode} during start-up:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer on {url} within {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_CHEST_EXAMPLES = ("01_child_normal.jpeg", "02_child_bacterial_pneumonia.jpeg", "03_adult_covid19.jpg")


def chest_film(seed: int = 0, h: int = 300, w: int = 260):
    """A real chest radiograph (one of the shipped examples, ``assets/examples``), float32 in [0, 1], resized to
    ``(h, w)`` and varied by ``seed`` (contrast, brightness, a little noise). Tests of file formats, runtimes and
    batching need inputs the input gate (medmm.gate) accepts: synthetic patterns are refused as not a chest film."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    with Image.open(ROOT / "assets" / "examples" / _CHEST_EXAMPLES[seed % len(_CHEST_EXAMPLES)]) as im:
        arr = np.asarray(im.convert("L").resize((w, h), Image.BILINEAR), np.float32) / 255.0
    arr = 0.05 * (seed % 4) + (0.85 + 0.05 * (seed % 3)) * arr + 0.01 * rng.standard_normal(arr.shape)
    return np.clip(arr, 0.0, 1.0).astype(np.float32)
