"""End to end: ``python app.py`` in a subprocess, driven by gradio_client and by headless Chromium (Playwright).

Marker: ``e2e``. The browser test needs Debian's chromium at /usr/bin/chromium (``apt-get install -y chromium``)
and skips with that reason when it is absent; the gradio_client tests need no browser. One app process serves the
whole module. The browser test saves ``artifacts/screenshot.png`` and copies it to ``docs/img/app_screenshot.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "examples"
IMAGE = EXAMPLES / "02_child_bacterial_pneumonia.jpeg"
NOTES = (EXAMPLES / "02_child_bacterial_pneumonia.txt").read_text(encoding="utf-8").strip()
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
STARTUP_TIMEOUT_S = 180
RESULT_TIMEOUT_MS = 120_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited with code {proc.returncode} before serving; log:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"app.py did not answer on {url} within {STARTUP_TIMEOUT_S} s; log:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server() -> tuple[str, Path]:
    """(url, server log path) of ``python app.py`` on a free localhost port."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log_path = ARTIFACTS / "e2e_app.log"
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, proc, log_path)
        yield url, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # nothing the user typed may reach the server log
    assert NOTES[:40] not in log_path.read_text(), "clinical notes leaked into the server log"


def test_gradio_client_predict_and_check(server: tuple[str, Path]) -> None:
    from gradio_client import Client, handle_file

    client = Client(server[0], verbose=False)
    out = client.predict(files=[handle_file(str(IMAGE))], notes=NOTES, finding="most probable", method="gradcam",
                         api_name="/predict")
    label, table, report = out[0], out[1], out[8]
    assert {c["label"] for c in label["confidences"]} == {"No Finding", "Pneumonia", "Bacterial pneumonia",
                                                          "Viral pneumonia", "COVID-19"}
    assert all(0.0 <= c["confidence"] <= 1.0 for c in label["confidences"])
    assert table["headers"] == ["Finding", "Probability", "Threshold", "Positive"]
    assert len(table["data"]) == 5
    for section in ("INDICATION:", "FINDINGS:", "IMPRESSION:"):
        assert section in report
    assert Path(out[11]).read_bytes().startswith(b"{")          # JSON download reached the client
    # the session's State carries the prediction into the follow-up call
    checked = client.predict(report_text="IMPRESSION: Normal chest. No pneumonia.", api_name="/check_consistency")
    assert isinstance(checked, str) and checked


def test_gradio_client_bad_file_is_a_clear_error(server: tuple[str, Path], tmp_path: Path) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    fake = tmp_path / "scan.png"
    fake.write_text("this is not an image\n" * 20)
    client = Client(server[0], verbose=False)
    with pytest.raises(AppError) as info:
        client.predict(files=[handle_file(str(fake))], notes="", finding="most probable", method="gradcam",
                       api_name="/predict")
    assert "image" in str(info.value).lower() or "file" in str(info.value).lower()
    assert "unexpectedly" not in str(info.value)


def test_browser_analyze_shows_findings_and_report(server: tuple[str, Path]) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{CHROMIUM} missing in CI: `make test` installs it with apt (see Makefile)")
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) for browser tests")
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    expect, sync_playwright = playwright.expect, playwright.sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(server[0], wait_until="domcontentloaded")
            expect(page.locator("#analyze")).to_be_visible(timeout=60_000)
            expect(page.locator("#disclaimer")).to_contain_text("not a diagnosis")
            page.locator("#scans input[type=file]").set_input_files(str(IMAGE))
            page.locator("#notes textarea").fill(NOTES)
            expect(page.locator("#scans")).to_contain_text(IMAGE.stem, timeout=30_000)   # upload finished
            page.locator("#analyze").click()
            expect(page.locator("#report textarea")).to_have_value(re.compile("IMPRESSION:"), timeout=RESULT_TIMEOUT_MS)
            expect(page.locator("#findings")).to_contain_text("Pneumonia")
            expect(page.locator("#findings-table")).to_contain_text("Threshold")
            expect(page.locator("#energy")).to_contain_text("CO2e")
            expect(page.locator("#overlay img")).to_be_visible()

            page.locator("#check").click()
            expect(page.locator("#consistency")).to_contain_text(re.compile("contradiction", re.I), timeout=30_000)

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "screenshot.png"
            page.screenshot(path=str(shot), full_page=True)

            page.get_by_text("Scan as loaded").click()                    # viewer + safe metadata
            expect(page.locator("#viewer img")).to_be_visible(timeout=30_000)
            expect(page.locator("#metadata")).to_contain_text("jpeg")
        finally:
            browser.close()
    docs_img = ROOT / "docs" / "img"
    docs_img.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, docs_img / "app_screenshot.png")
    assert shot.stat().st_size > 10_000
