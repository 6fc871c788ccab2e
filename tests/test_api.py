"""The data API as a program uses it: ``python app.py`` in a subprocess, ``/predict_json`` from gradio_client (the
README's example, run as written), and the same endpoint as an MCP tool (``MEDMM_MCP=1``, official ``mcp`` client).

One server for the module, on the torch runtime so its numbers can be compared with ``medmm predict --json``.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, running_app

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")

IMAGE = ROOT / "assets" / "examples" / "02_child_bacterial_pneumonia.jpeg"
NOTES = "Child, 4 years. Fever, productive cough."
try:
    import mcp  # noqa: F401
    HAVE_MCP = True
except ImportError:
    HAVE_MCP = False


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory):
    log_path = tmp_path_factory.mktemp("api") / "app.log"
    env = {"MEDMM_RUNTIME": "torch", "MEDMM_MCP": "1" if HAVE_MCP else "0",
           "MEDMM_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    with running_app(log_path, env) as (base, _):
        yield base
    assert "productive cough" not in log_path.read_text()      # nothing a user typed reaches the server log


@pytest.fixture(scope="module")
def cli_object() -> dict:
    """``medmm predict --json`` for the same scan and notes (torch runtime, as the server)."""
    out = subprocess.run([sys.executable, "-m", "medmm", "predict", str(IMAGE), "--notes", NOTES, "--json",
                          "--runtime", "torch"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _same_object(got: dict, ref: dict) -> None:
    assert list(got) == list(ref)
    assert got["findings"] == pytest.approx(ref["findings"], abs=1e-5)
    for key in ("thresholds", "positive", "modalities", "report", "warnings", "scans", "checkpoint", "disclaimer"):
        assert got[key] == ref[key], key
    assert got["energy"]["joules"] > 0 and got["latency_s"] > 0


def test_predict_json_from_gradio_client_is_the_cli_object(url: str, cli_object: dict) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    got = client.predict(files=[handle_file(str(IMAGE))], notes=NOTES, api_name="/predict_json")
    assert isinstance(got, dict)
    _same_object(got, cli_object)
    notes_only = client.predict(files=[], notes="fever and cough for three days", report=False,
                                api_name="/predict_json")
    assert notes_only["report"] == "" and notes_only["modalities"] == ["notes"] and notes_only["scans"] == []


def test_predict_json_bad_input_is_a_clear_error_and_the_server_carries_on(url: str, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(url, verbose=False)
    fake = tmp_path / "scan.png"
    fake.write_text("this is not an image\n" * 20)
    with pytest.raises(AppError) as info:
        client.predict(files=[handle_file(str(fake))], notes="", api_name="/predict_json")
    assert "not an image" in str(info.value) and "scan.png" not in str(info.value)
    with pytest.raises(AppError) as info:
        client.predict(files=[], notes="   ", api_name="/predict_json")
    assert "at least one scan or some clinical notes" in str(info.value)
    assert client.predict(files=[], notes="cough", api_name="/predict_json")["modalities"] == ["notes"]


def test_readme_example_runs_as_written(url: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "/predict_json" in b)
    assert "http://127.0.0.1:7860/" in block
    out = subprocess.run([sys.executable, "-c", block.replace("http://127.0.0.1:7860/", url)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Pneumonia" in out.stdout and "IMPRESSION:" in out.stdout


def test_session_follow_ups_need_the_sessions_key(url: str) -> None:
    """gr.State is found by a session hash the client chooses: a second client that copies another's hash gets
    nothing from /export or /check_consistency without the key /predict handed to the first client."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    owner = Client(url, verbose=False)
    out = owner.predict(files=[handle_file(str(IMAGE))], notes=NOTES, finding="most probable", method="gradcam",
                        api_name="/predict")
    key = out[18]                                        # docs/app.md: 18 session key
    assert isinstance(key, str) and len(key) >= 32
    intruder = Client(url, verbose=False)
    intruder.session_hash = owner.session_hash
    for guess in ("", "x" * len(key)):
        assert list(intruder.predict(report_text="IMPRESSION: x.", session_key=guess, api_name="/export")) == [None] * 3
        with pytest.raises(AppError, match="Analyze a study first"):
            intruder.predict(report_text="IMPRESSION: x.", session_key=guess, api_name="/check_consistency")
    assert "contradiction" in owner.predict(report_text="IMPRESSION: No pneumonia.", session_key=key,
                                            api_name="/check_consistency")
    text, _, _ = owner.predict(report_text="IMPRESSION: edited.", session_key=key, api_name="/export")
    assert Path(text).read_text(encoding="utf-8") == "IMPRESSION: edited."


def test_api_page_lists_the_data_api_and_hides_ui_only_events(url: str) -> None:
    from gradio_client import Client

    named = Client(url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(named) == {"/predict_json", "/predict", "/check_consistency", "/export"}
    params = named["/predict_json"]["parameters"]
    assert [p["parameter_name"] for p in params] == ["files", "notes", "report"]
    assert "02_child_bacterial_pneumonia.jpeg" in json.dumps(params[0]["example_input"])   # runs offline


@pytest.mark.skipif(not HAVE_MCP, reason="the mcp package is not installed (pip install 'mcp>=1.21,<2')")
def test_predict_json_is_the_only_mcp_tool_and_answers_with_an_image(url: str, cli_object: dict) -> None:
    import asyncio

    from mcp import ClientSession
    try:
        from mcp.client.streamable_http import streamable_http_client
    except ImportError:                                            # mcp < 1.24
        from mcp.client.streamable_http import streamablehttp_client as streamable_http_client

    image = "data:image/jpeg;base64," + base64.b64encode(IMAGE.read_bytes()).decode()

    async def session_calls():
        async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = (await session.list_tools()).tools
                good = await session.call_tool("predict_json", {"files": [image], "notes": NOTES})
                bad = await session.call_tool("predict_json", {"files": [], "notes": ""})
                return tools, good, bad

    tools, good, bad = asyncio.run(session_calls())
    assert [t.name for t in tools] == ["predict_json"]
    schema = tools[0].inputSchema
    assert schema["properties"]["files"]["items"]["type"] == "string" and "$ref" not in json.dumps(schema)
    assert "not a diagnosis" in tools[0].description
    assert not good.isError, good.content[0].text[:500]
    _same_object(ast.literal_eval(good.content[0].text), cli_object)   # gradio sends the object's Python literal
    assert bad.isError and "at least one scan or some clinical notes" in bad.content[0].text


def test_load_tests_browser_client_gets_the_cli_findings_and_fetches_what_a_page_shows(url: str, cli_object: dict,
                                                                                    tmp_path: Path) -> None:
    """``scripts/load_test.py --client browser`` (the 16-user figure of docs/bench.md): over plain HTTP, /predict
    answers with the CLI's findings (read from the result JSON at full precision), the page's images are fetched,
    and a download nobody clicked is not."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_test", ROOT / "scripts" / "load_test.py")
    load_test = sys.modules[spec.name] = importlib.util.module_from_spec(spec)   # its dataclasses look it up
    spec.loader.exec_module(load_test)
    from gradio_client import Client

    endpoint = load_test.discover(Client(url, verbose=False), "/predict")
    client = load_test.BrowserClient(url, endpoint, tmp_path / "got")
    try:
        resp = client.predict(*endpoint.build_args(IMAGE, NOTES), api_name="/predict")
    finally:
        client.close()
    got, exact = load_test.extract_findings(resp, set(cli_object["findings"]))
    assert exact and got == pytest.approx(cli_object["findings"], abs=1e-5)
    kinds = dict(zip([str(r.get("label")) for r in endpoint.returns], resp))
    overlay = Path(kinds["Saliency overlay"])
    assert overlay.parent == tmp_path / "got" and overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert kinds["DICOM SR"] == "medmm_report_sr.dcm"          # the name only: not fetched
    assert "productive cough" in load_test.all_text(resp)      # the draft's indication
