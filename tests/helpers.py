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
