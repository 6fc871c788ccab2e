"""End to end: ``python app.py`` in a subprocess, driven by gradio_client and by headless Chromium (Playwright).

Marker: ``e2e``. The browser test needs Debian's chromium at /usr/bin/chromium (``apt-get install -y chromium``)
and skips with that reason when it is absent; the gradio_client tests need no browser. One app process serves the
whole module. The browser tests save screenshots under ``artifacts/`` (git-ignored); the tracked
``docs/img/app_screenshot.png`` is rewritten only when ``MEDMM_UPDATE_SCREENSHOT=1`` asks for it, so ``make test``
leaves the tree clean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.helpers import running_app

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
UPDATE_SCREENSHOT = os.environ.get("MEDMM_UPDATE_SCREENSHOT", "") == "1"


@pytest.fixture(scope="module")
def server() -> tuple[str, Path]:
    """(url, server log path) of ``python app.py`` on a free localhost port."""
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "e2e_app.log"
    with running_app(log_path, timeout_s=STARTUP_TIMEOUT_S) as (url, _):
        yield url, log_path
    # nothing the user typed may reach the server log
    assert NOTES[:40] not in log_path.read_text(), "clinical notes leaked into the server log"


def test_gradio_client_predict_and_check(server: tuple[str, Path]) -> None:
    from gradio_client import Client, handle_file

    client = Client(server[0], verbose=False)
    out = client.predict(files=[handle_file(str(IMAGE))], notes=NOTES, finding="most probable", method="gradcam",
                         api_name="/predict")
    label, table, report = out[0], out[1], out[8]
    # the headline chart: the findings assessed on a child's film (COVID-19 needs a test result in the notes)
    assert {c["label"] for c in label["confidences"]} == {"No Finding", "Pneumonia", "Bacterial pneumonia",
                                                          "Viral pneumonia"}
    assert all(0.0 <= c["confidence"] <= 1.0 for c in label["confidences"])
    assert table["headers"] == ["Finding", "Probability", "Threshold", "Positive"]
    assert len(table["data"]) == 5
    for section in ("INDICATION:", "FINDINGS:", "IMPRESSION:"):
        assert section in report
    assert Path(out[11]).read_bytes().startswith(b"{")          # JSON download reached the client
    # the session's State carries the prediction into the follow-up call, opened by the key /predict returned
    checked = client.predict(report_text="IMPRESSION: Normal chest. No pneumonia.", session_key=out[18],
                             api_name="/check_consistency")
    assert isinstance(checked, str) and "contradiction" in checked


def test_api_page_example_is_a_shipped_file_not_an_online_pdf(server: tuple[str, Path]) -> None:
    from gradio_client import Client, handle_file

    client = Client(server[0], verbose=False)
    info = client.view_api(print_info=False, return_format="dict")
    params = info["named_endpoints"]["/predict"]["parameters"]
    example = json.dumps(params[0].get("example_input"))
    assert "github.com" not in example and "sample_file.pdf" not in example
    assert "02_child_bacterial_pneumonia.jpeg" in example
    assert "/export" in info["named_endpoints"] and "/check_consistency" in info["named_endpoints"]
    # the documented example runs as it is, without network
    path = json.loads(example)[0]["path"]
    out = client.predict(files=[handle_file(path)], notes="", finding="most probable", method="gradcam",
                         api_name="/predict")
    assert "IMPRESSION:" in out[8]


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


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium driven by Playwright (skips cleanly without them; fails in CI without chromium)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{CHROMIUM} missing in CI: `make test` installs it with apt (see Makefile)")
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) for browser tests")
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _expect():
    from playwright.sync_api import expect

    return expect


def _open(browser, url: str, **context_kwargs):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True, **context_kwargs)
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    _expect()(page.locator("#analyze")).to_be_visible(timeout=60_000)
    return context, page


def _analyze(page, files: list[Path], notes: str) -> None:
    page.locator("#scans input[type=file]").set_input_files([str(f) for f in files])
    for f in files:
        _expect()(page.locator("#scans")).to_contain_text(f.stem, timeout=30_000)   # upload finished
    page.locator("#notes textarea").fill(notes)
    page.locator("#analyze").click()


def _download(page, label: str, timeout_ms: int = 15_000) -> bytes:
    with page.expect_download(timeout=timeout_ms) as info:
        page.get_by_role("button", name=label).click()
    return Path(info.value.path()).read_bytes()


def test_browser_analyze_shows_findings_and_report(server: tuple[str, Path], browser) -> None:
    expect = _expect()
    context, page = _open(browser, server[0])
    try:
        expect(page.locator("#disclaimer")).to_contain_text("not a diagnosis")
        expect(page.locator("#about")).to_contain_text("Bacterial pneumonia")         # what the model outputs
        expect(page.locator("#about")).to_contain_text("pediatric")                   # whom it was trained on
        expect(page.locator("#about")).to_contain_text("model card")
        _analyze(page, [IMAGE], NOTES)
        expect(page.locator("#report textarea")).to_have_value(re.compile("IMPRESSION:"), timeout=RESULT_TIMEOUT_MS)
        expect(page.locator("#status")).to_contain_text("complete")
        expect(page.locator("#findings")).to_contain_text("Pneumonia")
        expect(page.locator("#findings-table")).to_contain_text("Threshold")
        expect(page.locator("#energy")).to_contain_text("CO2e")
        expect(page.locator("#overlay img")).to_be_visible()
        report = page.locator("#report textarea").input_value()
        assert "not assessed by this model" in report and "Heart size" not in report

        page.locator("#check").click()
        expect(page.locator("#consistency")).to_contain_text(re.compile("contradiction", re.I), timeout=30_000)

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "screenshot.png"
        page.screenshot(path=str(shot), full_page=True)

        page.get_by_text("Scan as loaded").click()                    # viewer + safe metadata
        expect(page.locator("#viewer img")).to_be_visible(timeout=30_000)
        expect(page.locator("#metadata")).to_contain_text("jpeg")
    finally:
        context.close()
    assert shot.stat().st_size > 10_000
    if UPDATE_SCREENSHOT:   # the tracked README screenshot changes only on request
        docs_img = ROOT / "docs" / "img"
        docs_img.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, docs_img / "app_screenshot.png")


def test_browser_knee_note_is_shown_as_negated_evidence_that_lowers(server: tuple[str, Path], browser) -> None:
    """Issue 24's adult case on screen: "no respiratory symptoms" is read as negated, with its negative likelihood
    ratio and source, lowers Pneumonia (blue on the note), and nothing is raised by the note."""
    expect = _expect()
    from tests.helpers import require_shared

    dicom = require_shared("dicom", "txv_siim.dcm")
    context, page = _open(browser, server[0])
    try:
        _analyze(page, [dicom], "58M, pre-op knee replacement, no respiratory symptoms.")
        expect(page.locator("#status")).to_contain_text("complete", timeout=RESULT_TIMEOUT_MS)
        panel = page.locator("#notes-evidence")
        expect(panel).to_contain_text("no respiratory symptoms")
        expect(panel).to_contain_text("negated")
        expect(panel).to_contain_text("LR- 0.31")
        expect(panel).to_contain_text("lowers")
        expect(panel).to_contain_text("Metlay")
        rows = panel.locator("tbody tr").all_inner_texts()
        assert rows and not any("raises" in r for r in rows)  # the knee note raises nothing
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "knee_note_evidence.png"), full_page=True)
    finally:
        context.close()


def test_browser_failed_request_clears_the_previous_patient(server: tuple[str, Path], browser, tmp_path: Path) -> None:
    """After a good analysis, a failed one (a text file renamed .png) leaves no panel, download or state of the
    previous patient, and says why once, in the status panel."""
    expect = _expect()
    context, page = _open(browser, server[0])
    try:
        _analyze(page, [IMAGE], NOTES)
        expect(page.locator("#report textarea")).to_have_value(re.compile("IMPRESSION:"), timeout=RESULT_TIMEOUT_MS)
        assert _download(page, "Report (.txt)").decode("utf-8").startswith("INDICATION:")

        fake = tmp_path / "next_patient.png"
        fake.write_text("this is a text file, not an X-ray\n" * 20)
        page.locator("#scans input[type=file]").set_input_files(str(fake))
        expect(page.locator("#scans")).to_contain_text(fake.stem, timeout=30_000)
        page.locator("#notes textarea").fill("next patient with cough")
        page.locator("#analyze").click()
        expect(page.locator("#status")).to_contain_text("request failed", timeout=RESULT_TIMEOUT_MS)
        expect(page.locator("#status")).to_contain_text("not an image")
        expect(page.locator("#report textarea")).to_have_value("")
        expect(page.locator("#findings")).not_to_contain_text("Pneumonia")
        expect(page.locator("#overlay img")).to_have_count(0)
        expect(page.locator("#findings-table")).not_to_contain_text("YES")
        expect(page.locator("#energy")).not_to_contain_text("CO2e")
        assert page.locator("#findings-table").inner_text().count("Pneumonia") == 0
        page.screenshot(path=str(ARTIFACTS / "failed_request.png"), full_page=True)
        for label in ("Report (.txt)", "Result (JSON)", "DICOM SR"):     # nothing left to download
            with pytest.raises(Exception, match="(?i)timeout"):
                _download(page, label, timeout_ms=3_000)
        # the follow-up actions know there is no current result
        page.locator("#report textarea").fill("IMPRESSION: No pneumonia.")
        page.locator("#check").click()
        expect(page.get_by_text("Analyze a study first")).to_be_visible(timeout=15_000)
    finally:
        context.close()


def test_browser_pasted_edit_reaches_all_three_downloads(server: tuple[str, Path], browser) -> None:
    import pydicom

    expect = _expect()
    context, page = _open(browser, server[0], permissions=["clipboard-read", "clipboard-write"])
    try:
        _analyze(page, [IMAGE], NOTES)
        box = page.locator("#report textarea")
        expect(box).to_have_value(re.compile("IMPRESSION:"), timeout=RESULT_TIMEOUT_MS)
        pasted = ("INDICATION: cough\n\nFINDINGS: Pasted clinician finding.\n\nIMPRESSION: Pasted impression.\n\n"
                  "RECOMMENDATIONS: Pasted follow-up advice.")
        page.evaluate("text => navigator.clipboard.writeText(text)", pasted)
        box.click()
        page.keyboard.press("Control+A")
        page.keyboard.press("Control+V")
        expect(box).to_have_value(pasted)
        deadline = time.monotonic() + 30
        while True:          # the export runs on the change event: poll until the download follows
            text = _download(page, "Report (.txt)").decode("utf-8")
            if text == pasted or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert text == pasted
        payload = json.loads(_download(page, "Result (JSON)"))
        assert payload["report"] == pasted and payload["report_edited"] is True
        sr_bytes = _download(page, "DICOM SR")
        import io as _io

        ds = pydicom.dcmread(_io.BytesIO(sr_bytes))
        sr_text = " ".join(str(item.TextValue) for item in ds.ContentSequence)
        for piece in ("Pasted clinician finding.", "Pasted impression.", "Pasted follow-up advice."):
            assert piece in sr_text, piece
    finally:
        context.close()


# ------------------------------------------------------------------- results never outlive their inputs
PNEUMONIA = EXAMPLES / "02_child_bacterial_pneumonia.jpeg"
PNEUMONIA_NOTE = (EXAMPLES / "02_child_bacterial_pneumonia.txt").read_text(encoding="utf-8").strip()
NORMAL = EXAMPLES / "01_child_normal.jpeg"
NORMAL_NOTE = (EXAMPLES / "01_child_normal.txt").read_text(encoding="utf-8").strip()
DOWNLOADS = ("Report (.txt)", "Result (JSON)", "DICOM SR")


def _assert_cleared(page) -> None:
    """Nothing of the previous analysis on screen or to download, and the status says why."""
    expect = _expect()
    expect(page.locator("#status")).to_contain_text("Inputs changed", timeout=15_000)
    expect(page.locator("#status")).to_contain_text("Analyze")
    expect(page.locator("#status")).not_to_contain_text("complete")
    expect(page.locator("#report textarea")).to_have_value("")
    expect(page.locator("#findings")).not_to_contain_text("Pneumonia")
    expect(page.locator("#findings-table")).not_to_contain_text("YES")
    assert page.locator("#findings-table").inner_text().count("Pneumonia") == 0
    expect(page.locator("#overlay img")).to_have_count(0)
    expect(page.locator("#energy")).not_to_contain_text("CO2e")
    expect(page.locator("#notes-evidence")).not_to_contain_text("raises")
    for label in DOWNLOADS:                                     # nothing left to download
        with pytest.raises(Exception, match="(?i)timeout"):
            _download(page, label, timeout_ms=3_000)


def test_browser_new_film_and_note_without_analyze_clear_the_previous_results(server: tuple[str, Path], browser,
                                                                            tmp_path: Path) -> None:
    """The issue's stale screen: after a pneumonia film, a normal film and a new note, no Analyze. Every panel, the
    draft and the downloads of the previous patient are gone and the status says why; Analyze brings results back."""
    expect = _expect()
    context, page = _open(browser, server[0])
    try:
        expect(page.locator("#status")).to_contain_text("after Analyze")     # idle: nothing fired on load
        _analyze(page, [PNEUMONIA], PNEUMONIA_NOTE)
        expect(page.locator("#report textarea")).to_have_value(re.compile("IMPRESSION:"), timeout=RESULT_TIMEOUT_MS)
        expect(page.locator("#status")).to_contain_text("complete")
        expect(page.locator("#findings")).to_contain_text("Pneumonia")
        expect(page.locator("#findings-table")).to_contain_text("YES")
        assert _download(page, "Report (.txt)").decode("utf-8").startswith("INDICATION:")
        time.sleep(1.0)                     # nothing after the results (the .then chain, the export) clears them
        expect(page.locator("#status")).to_contain_text("complete")
        expect(page.locator("#report textarea")).to_have_value(re.compile("IMPRESSION:"))

        # the next patient: replace the film and type a new note, no Analyze
        page.locator("#scans").get_by_role("button", name="Clear").click()
        expect(page.locator("#scans")).not_to_contain_text(PNEUMONIA.stem)
        page.locator("#scans input[type=file]").set_input_files(str(NORMAL))
        expect(page.locator("#scans")).to_contain_text(NORMAL.stem, timeout=30_000)
        notes = page.locator("#notes textarea")
        notes.fill("")
        notes.press_sequentially(NORMAL_NOTE[:40], delay=5)                  # keystrokes, as typed
        notes.fill(NORMAL_NOTE)
        _assert_cleared(page)
        shot = tmp_path / "inputs_changed.png"
        page.screenshot(path=str(shot), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "inputs_changed.png").write_bytes(shot.read_bytes())
        # the follow-ups know there is no current result either
        page.locator("#check").click()
        expect(page.get_by_text("Analyze a study first")).to_be_visible(timeout=15_000)

        page.locator("#analyze").click()
        expect(page.locator("#report textarea")).to_have_value(re.compile("IMPRESSION:"), timeout=RESULT_TIMEOUT_MS)
        expect(page.locator("#status")).to_contain_text("complete")
        expect(page.locator("#energy")).to_contain_text("CO2e")
        report = _download(page, "Report (.txt)").decode("utf-8")        # the new patient's draft, not the old one
        assert report.startswith("INDICATION: Child, 6 years.") and "Child, 4 years" not in report
        assert json.loads(_download(page, "Result (JSON)"))["positive"] == ["No Finding"]
    finally:
        context.close()
    assert shot.stat().st_size > 10_000


def test_browser_input_changed_while_an_analysis_waits_cancels_it(server: tuple[str, Path], browser) -> None:
    """Analyze pressed while the queue is busy (one analysis at a time), then the note edited: that analysis was
    for the old inputs; it is cancelled and its results never appear, even after the queue has emptied."""
    from gradio_client import Client, handle_file

    expect = _expect()
    client = Client(server[0], verbose=False)
    busy = [client.submit(files=[handle_file(str(PNEUMONIA))], notes="", finding="most probable", method="occlusion",
                          api_name="/predict") for _ in range(3)]         # keep the single worker busy a while
    context, page = _open(browser, server[0])
    try:
        _analyze(page, [PNEUMONIA], PNEUMONIA_NOTE)
        expect(page.locator("#status")).to_contain_text("Analysing", timeout=15_000)
        page.locator("#notes textarea").fill(NORMAL_NOTE)
        expect(page.locator("#status")).to_contain_text("Inputs changed", timeout=15_000)
        assert not all(job.done() for job in busy), "the queue emptied before the note changed: test is inconclusive"
        for job in busy:
            job.result(timeout=RESULT_TIMEOUT_MS / 1000)
        time.sleep(3)                                      # the cancelled analysis would have run and shown by now
        expect(page.locator("#status")).to_contain_text("Inputs changed")
        expect(page.locator("#report textarea")).to_have_value("")
        expect(page.locator("#findings")).not_to_contain_text("Pneumonia")
        page.locator("#analyze").click()                   # the new inputs are analysed on request
        expect(page.locator("#report textarea")).to_have_value(re.compile("IMPRESSION:"), timeout=RESULT_TIMEOUT_MS)
        expect(page.locator("#status")).to_contain_text("complete")
    finally:
        context.close()


PROGRESS_RECORDER = """() => {
  window.__medmmProgress = [];
  const record = () => {
    const el = document.querySelector('#status');
    const text = el ? el.innerText : '';
    const last = window.__medmmProgress[window.__medmmProgress.length - 1];
    if (text && text !== last) window.__medmmProgress.push(text);
  };
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_browser_progress_moves_past_the_first_stage(server: tuple[str, Path], browser) -> None:
    expect = _expect()
    context, page = _open(browser, server[0])
    try:
        page.evaluate(PROGRESS_RECORDER)
        page.get_by_label("Occlusion").check()          # the slow method: stages last long enough to be seen
        _analyze(page, [IMAGE], NOTES)
        expect(page.locator("#report textarea")).to_have_value(re.compile("IMPRESSION:"), timeout=RESULT_TIMEOUT_MS)
        seen = "\n".join(page.evaluate("() => window.__medmmProgress"))
    finally:
        context.close()
    # the bar shows real stages (k/5); at least one after loading was on screen (fast stages may be skipped
    # between two progress updates, so not every stage has to appear)
    stages = {int(k) for k in re.findall(r"\((\d)/5\)", seen)}
    assert stages and max(stages) >= 2, f"progress never moved past the first stage: {seen[:2000]}"
    assert "Computing and checking the explanation" in seen       # the long one (occlusion) is always seen


def test_browser_operating_point_table_readable_on_a_phone(server: tuple[str, Path], browser) -> None:
    expect = _expect()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(server[0], wait_until="domcontentloaded")
        expect(page.locator("#analyze")).to_be_visible(timeout=60_000)
        _analyze(page, [IMAGE], NOTES)
        expect(page.locator("#report textarea")).to_have_value(re.compile("IMPRESSION:"), timeout=RESULT_TIMEOUT_MS)
        table = page.locator("#findings-table")
        table.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "phone_390.png"), full_page=False)
        box = table.bounding_box()
        for header in ("Threshold", "Positive"):   # every column header is on screen, not scrolled away
            cell = table.get_by_text(header, exact=True).first
            cb = cell.bounding_box()
            assert cb is not None and cb["x"] >= 0 and cb["x"] + cb["width"] <= min(390, box["x"] + box["width"]) + 1, \
                (header, cb, box)
    finally:
        context.close()


def test_browser_a_photo_is_refused_and_nothing_is_called(server: tuple[str, Path], browser) -> None:
    """Issue 25: a photograph (not a chest radiograph) is refused on screen with the reason: no calls, no draft, no
    map, no download."""
    expect = _expect()
    photo = ROOT / "tests" / "data" / "nonchest" / "photo.jpg"
    context, page = _open(browser, server[0])
    try:
        _analyze(page, [photo], "Fever and cough for three days.")
        expect(page.locator("#status")).to_contain_text("Not analysed", timeout=RESULT_TIMEOUT_MS)
        expect(page.locator("#status")).to_contain_text("does not look like a chest radiograph")
        expect(page.locator("#report textarea")).to_have_value("")
        expect(page.locator("#findings-table")).not_to_contain_text("YES")
        expect(page.locator("#overlay img")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "refused_photo.png"), full_page=True)
        with pytest.raises(Exception, match="(?i)timeout"):
            _download(page, "Report (.txt)", timeout_ms=3_000)
    finally:
        context.close()


def test_browser_lateral_jpeg_is_recognised_and_every_frontal_view_is_explained(server: tuple[str, Path],
                                                                                 browser) -> None:
    """A frontal film with a lateral JPEG (no DICOM header to say so): the lateral is recognised from its pixels and
    set aside, the warning says so, the frontal film is analysed and explained. Two frontal films: both maps are
    shown, each with what to do with it."""
    import csv

    from tests.helpers import require_shared

    expect = _expect()
    covid = require_shared("covid_notes")
    rows = list(csv.DictReader((covid / "metadata.csv").open(encoding="utf-8")))
    lateral = covid / "images" / next(r["image"] for r in rows if r["view"] == "L" and r["image"].endswith(".jpg"))
    context, page = _open(browser, server[0])
    try:
        _analyze(page, [EXAMPLES / "03_adult_covid19.jpg", lateral], "Cough.")
        expect(page.locator("#status")).to_contain_text("complete", timeout=RESULT_TIMEOUT_MS)
        expect(page.locator("#warnings")).to_contain_text("Scan 2 of 2 looks like a lateral")
        expect(page.locator("#warnings")).to_contain_text("set aside")
        expect(page.locator("#overlay img")).to_be_visible()
        expect(page.locator("#report textarea")).to_have_value(re.compile("not assessed on adult films"))
        page.screenshot(path=str(ARTIFACTS / "lateral_set_aside.png"), full_page=True)

        page.locator("#scans").get_by_role("button", name="Clear").click()
        _analyze(page, [EXAMPLES / "01_child_normal.jpeg", IMAGE], "")
        expect(page.locator("#status")).to_contain_text("complete", timeout=RESULT_TIMEOUT_MS)
        expect(page.locator("#explanation")).to_contain_text("Scan 2:")
        expect(page.locator("#explanation")).to_contain_text("Scan 1:")
        page.screenshot(path=str(ARTIFACTS / "two_views_explained.png"), full_page=True)
    finally:
        context.close()


def test_browser_consistency_panel_shows_report_markup_as_text(server: tuple[str, Path], browser) -> None:
    """Text the clinician (or a hostile paste) puts in the report is quoted by the consistency check as the
    characters typed: no HTML element, link, emphasis or formula is made from it (issue 29)."""
    expect = _expect()
    context, page = _open(browser, server[0])
    try:
        _analyze(page, [IMAGE], NOTES)
        box = page.locator("#report textarea")
        expect(box).to_have_value(re.compile("IMPRESSION:"), timeout=RESULT_TIMEOUT_MS)
        hostile = "IMPRESSION: No pneumonia <b>bold</b> **star** [link](http://evil.example) $x^2$."
        box.fill(hostile)
        page.locator("#check").click()
        panel = page.locator("#consistency")
        expect(panel).to_contain_text("**star**", timeout=30_000)
        text = panel.inner_text()
        assert "<b>bold</b>" in text and "[link](http://evil.example)" in text and "$x^2$" in text
        assert panel.locator("b, a, img, .katex, em").count() == 0
    finally:
        context.close()
