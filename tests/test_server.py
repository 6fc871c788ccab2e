"""The app as deployed: `python app.py` in a subprocess (private cache, login, headers, run history, upload limits,
SIGTERM clean-up), and medmm.serve.server's pieces on their own."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from medmm.serve import server
from tests.helpers import running_app

httpx = pytest.importorskip("httpx")
pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("cache")
    dead = cache / "run-999999999-deadbeef"          # a folder left by a killed earlier run
    dead.mkdir()
    (dead / "old_upload.dcm").write_bytes(b"x")
    env = {"MEDMM_CACHE_DIR": str(cache), "MEDMM_AUTH": "clinician:s3cret-pass"}
    with running_app(tmp_path_factory.mktemp("log") / "app.log", env) as (url, proc):
        yield proc, httpx.Client(base_url=url.rstrip("/"), timeout=30), cache, dead


def cache_of(running) -> Path:
    proc, _, cache, _ = running
    return next(p for p in cache.iterdir() if p.name.startswith(f"run-{proc.pid}-"))


def _login(client) -> None:
    r = client.post("/login", data={"username": "clinician", "password": "s3cret-pass"})
    assert r.status_code == 200, r.text


def test_private_cache_and_dead_runs_removed(running) -> None:
    proc, _, cache, dead = running
    runs = [p for p in cache.iterdir() if p.name.startswith(f"run-{proc.pid}-")]
    assert len(runs) == 1 and oct(runs[0].stat().st_mode & 0o777) == "0o700"
    assert not dead.exists()


def test_login_required_headers_and_run_history_off(running) -> None:
    _, client, _, _ = running
    client.cookies.clear()
    assert client.get("/config").status_code == 401
    page = client.get("/")
    for name in ("x-frame-options", "x-content-type-options", "content-security-policy"):
        assert name in page.headers, name
    assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
    _login(client)
    config = client.get("/config")
    assert config.status_code == 200
    assert config.json()["run_history"] is False
    assert config.headers["x-content-type-options"] == "nosniff"


def test_upload_limits(running) -> None:
    _, client, _, _ = running
    _login(client)
    ok = client.post("/gradio_api/upload", files=[("files", ("Doe_John_MRN4471923.png", b"\x89PNG" + b"0" * 100,
                                                             "image/png"))])
    assert ok.status_code == 200 and len(ok.json()) == 1
    stored = Path(ok.json()[0])
    assert stored.resolve().is_relative_to((cache_of(running)).resolve())  # the private run folder
    # stored under a random name: the client's file name (here a patient's name and MRN) never reaches the disk
    assert stored.name.startswith("upload-") and stored.suffix == ".png" and "Doe" not in str(stored)
    assert stored.read_bytes() == b"\x89PNG" + b"0" * 100
    many = client.post("/gradio_api/upload",
                       files=[("files", (f"f{i}.png", b"x" * 10, "image/png")) for i in range(server.MAX_UPLOAD_FILES + 1)])
    assert many.status_code == 413 and "files" in many.text
    big = client.post("/gradio_api/upload", files=[("files", ("big.dcm", b"0" * (server.MAX_UPLOAD_BYTES + 10), "x"))])
    assert big.status_code == 413 and "MB" in big.text
    empty_name = client.post("/gradio_api/upload", files=[("files", ("", b"abc", "image/png"))])
    assert empty_name.status_code in (200, 400) and "Traceback" not in empty_name.text


def test_sigterm_removes_the_cache(running) -> None:
    proc, client, cache, _ = running
    _login(client)
    up = client.post("/gradio_api/upload", files=[("files", ("scan.dcm", b"DICM" * 40, "application/dicom"))])
    assert up.status_code == 200 and Path(up.json()[0]).exists()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert not Path(up.json()[0]).exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(f"run-{proc.pid}-")]


@pytest.mark.parametrize("chunk", [1, 7, 100, 5000, 70_000])
def test_upload_renamer_rewrites_part_names_only(chunk: int) -> None:
    """Any chunking of the body: every part's file name is replaced, file bytes (even ones that look like a part
    header) pass through unchanged."""
    d = b"--boundary42"
    payload = bytes(range(256)) * 400 + b'\r\nContent-Disposition: form-data; filename="inside.dcm"\r\n'
    body = b"".join(d + b'\r\nContent-Disposition: form-data; name="files"; filename="' + name + b'"\r\n'
                    b"Content-Type: application/octet-stream\r\n\r\n" + payload + b"\r\n"
                    for name in (b"Smith, John 03-14-58.dcm", b"scan two.JPG", b"noext")) + d + b"--\r\n"
    renamer, out = server.UploadRenamer(d), b""
    for i in range(0, len(body), chunk):
        out += renamer.feed(body[i:i + chunk], final=i + chunk >= len(body))
    names = re.findall(rb'name="files"; filename="([^"]*)"', out)
    assert [n.rsplit(b".", 1)[-1] if b"." in n else b"" for n in names] == [b"dcm", b"jpg", b""]
    assert all(re.fullmatch(rb"upload-[0-9a-f]{16}(\.\w+)?", n) for n in names) and len(set(names)) == 3
    assert b"Smith" not in out and out.count(payload) == 3  # contents intact, including the header-like bytes


def test_upload_renamer_handles_rfc5987_names_and_leaves_form_fields_alone() -> None:
    d = b"--b0undary"
    field = b'Content-Disposition: form-data; filename="inside-a-field-value.txt"'  # a field's *value*
    body = (d + b'\r\nContent-Disposition: form-data; name="note"\r\n\r\n' + field + b"\r\n"
            + d + b'\r\nContent-Disposition: form-data; name="files"; filename="Doe.dcm"; '
                  b"filename*=UTF-8''Doe%20John.dcm\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n" + d + b"--\r\n")
    out = server.UploadRenamer(d).feed(body, final=True)
    assert field in out                                        # not a part header: untouched
    assert b"Doe" not in out
    plain = re.search(rb'filename="(upload-[0-9a-f]{16}\.dcm)"', out).group(1)
    assert re.search(rb"filename\*=UTF-8''" + plain + rb"\r\n", out)  # both forms carry the same new name


def test_parse_auth_and_text_input() -> None:
    assert server.parse_auth(None) is None and server.parse_auth("") is None
    assert server.parse_auth("a:b, c:d:e") == [("a", "b"), ("c", "d:e")]
    with pytest.raises(ValueError):
        server.parse_auth("nopassword")
    assert server.text_input(None, "notes", 10) == ""
    with pytest.raises(ValueError, match="must be text"):
        server.text_input({"a": 1}, "notes", 10)
    with pytest.raises(ValueError, match="longer than"):
        server.text_input("x" * 11, "report", 10)
    kwargs = server.launch_kwargs("50mb")
    assert kwargs["run_history"] is False and kwargs["max_file_size"] == "50mb"


# ------------------------------------------------------------------------------------------------ hostile clients
# identifiers a hostile caller sends; none may appear in the server log
PHI = ("Smithers", "MRN4471923", "19370214", "555-0199")
PHI_NOTES = "Pt Johnathan Smithers, MRN4471923, DOB 1937-02-14 (19370214), phone 555-0199. Fever, cough."


@pytest.fixture(scope="module")
def open_app(tmp_path_factory: pytest.TempPathFactory):
    """The app without a login (so that raw HTTP and gradio_client can talk to it), its log file."""
    log = tmp_path_factory.mktemp("open-log") / "app.log"
    env = {"MEDMM_CACHE_DIR": str(tmp_path_factory.mktemp("open-cache"))}
    with running_app(log, env) as (url, proc):
        yield url.rstrip("/"), log, proc


def _rest_call(client, api: str, data: list) -> str:
    """Gradio's REST path: POST /gradio_api/call/<api> then read its event stream; the stream's text."""
    r = client.post(f"/gradio_api/call/{api}", json={"data": data})
    assert r.status_code == 200, r.text
    return client.get(f"/gradio_api/call/{api}/{r.json()['event_id']}", timeout=120).text


def _error_of(stream: str) -> str | None:
    import json

    assert "event: error" in stream, stream
    data = json.loads(stream.split("event: error", 1)[1].split("data:", 1)[1].strip().splitlines()[0])
    return data.get("error") if isinstance(data, dict) else data


def _dicom_with_phi_uid() -> bytes:
    import numpy as np
    import pydicom

    from tests.helpers import chest_film
    from tests.make_bad_inputs import dicom_bytes, dicom_dataset

    with pydicom.config.disable_value_validation():
        ds = dicom_dataset((chest_film(0) * 255).astype(np.uint8), StudyInstanceUID="1.2.840.99.MRN4471923.19370214")
        return dicom_bytes(ds)


def test_malformed_api_calls_get_clear_errors_and_the_log_no_identifiers(open_app, tmp_path: Path) -> None:
    """The REST ``call`` path with a missing argument, notes of the wrong JSON type, a path never uploaded, and a
    DICOM whose StudyInstanceUID carries an MRN and a birth date: each call answers with a clear error (never
    ``{"error": null}``) or a result, and the server log holds none of the identifiers."""
    from gradio_client import Client, handle_file

    url, log, _ = open_app
    http = httpx.Client(base_url=url, timeout=120)
    missing = _error_of(_rest_call(http, "predict_json", [[], PHI_NOTES]))            # no `report` value
    assert missing and "takes 3 input values" in missing and "sent 2" in missing
    for notes in ({"name": "Smithers", "mrn": "MRN4471923"}, 4471923, ["Smithers"]):
        assert _error_of(_rest_call(http, "predict_json", [[], notes, True])) == \
            "The notes must be text (a JSON string) or null."
    assert _error_of(_rest_call(http, "predict_json", [[], PHI_NOTES, "yes"])) == \
        "The report option must be true or false."
    ghost = {"path": "/tmp/Smithers_MRN4471923.png", "meta": {"_type": "gradio.FileData"}}
    never = _error_of(_rest_call(http, "predict_json", [[ghost], PHI_NOTES, True]))
    assert never and "not uploaded to this server" in never
    assert _error_of(_rest_call(http, "predict_json", ["Smithers.png", PHI_NOTES, True])).startswith("The files")
    # the UI's routes too: a queued join and an unqueued run with too few values, notes in them
    deps = http.get("/config").json()["dependencies"]
    fn = next(i for i, d in enumerate(deps) if d.get("api_name") == "predict_json")
    join = http.post("/gradio_api/queue/join", json={"data": [PHI_NOTES], "fn_index": fn, "trigger_id": None,
                                                     "session_hash": "phi-join", "event_data": None})
    assert join.status_code == 200
    stream = http.get("/gradio_api/queue/data", params={"session_hash": "phi-join"}).text
    assert "takes 3 input values" in stream and "Smithers" not in stream
    run = http.post("/gradio_api/run/predict", json={"fn_index": fn, "data": [PHI_NOTES], "session_hash": "phi-run"})
    assert "takes 3 input values" in run.text and "Smithers" not in run.text
    bad = http.post("/gradio_api/call/predict_json", content=b'{"data": [[], "Smithers MRN4471923"')  # cut JSON
    assert bad.status_code in (400, 422)           # FastAPI's 422 echoes the body to its sender only, never to the log
    # a real analysis of a DICOM whose UID pydicom calls invalid (it used to log the value three times)
    scan = tmp_path / "Smithers_MRN4471923.dcm"
    scan.write_bytes(_dicom_with_phi_uid())
    client = Client(url + "/", verbose=False)
    result = client.predict(files=[handle_file(str(scan))], notes=PHI_NOTES, report=True, api_name="/predict_json")
    assert set(result["findings"]) and "Smithers" not in str(result["scans"])
    text = log.read_text(errors="replace")
    assert "Received inputs" not in text
    for identifier in PHI:
        assert identifier not in text, (identifier, text[-3000:])


def _fn_index(http, *, queued: bool, inputs: int) -> int:
    """The index of a UI-only event that runs no model (the Analyze button's clear, an input's change)."""
    deps = http.get("/config").json()["dependencies"]
    return next(i for i, d in enumerate(deps) if d.get("queue") is queued and len(d["inputs"]) == inputs
                and d.get("api_visibility", "private") == "private" and d.get("trigger_mode") != "always_last")


def test_cheap_events_with_fresh_session_hashes_do_not_evict_a_result(open_app) -> None:
    """The eviction attack: 3 x STATE_SESSIONS POSTs of the clear event (queue=False, no model run), each with a
    fresh session hash, used to push every result out of gradio's state; the victim's /export still works."""
    import secrets

    from gradio_client import Client, handle_file

    url, _, _ = open_app
    victim = Client(url + "/", verbose=False)
    out = victim.predict(files=[handle_file(str(server_example()))], notes="Fever and cough.",
                         finding="most probable", method="gradcam", api_name="/predict")
    key = out[18]
    attacker = httpx.Client(base_url=url, timeout=30)
    clear = _fn_index(attacker, queued=False, inputs=0)
    for _ in range(3 * server.STATE_SESSIONS):
        r = attacker.post("/gradio_api/run/predict",
                          json={"fn_index": clear, "data": [], "session_hash": secrets.token_hex(6)})
        assert r.status_code == 200, r.text
    files = victim.predict(report_text="IMPRESSION: Clinician-edited.", session_key=key, api_name="/export")
    assert all(files[:2]), files                     # .txt and JSON written from the victim's stored result


def server_example() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "examples" / "02_child_bacterial_pneumonia.jpeg"


def test_another_clients_session_hash_reaches_neither_its_state_nor_its_messages(open_app) -> None:
    """Session hashes are chosen by the client: the middleware namespaces each by client (the medmm_client cookie,
    else the address), so a spy that joins and listens on the victim's hash works in a session of its own: it
    receives its own messages only, and the victim still receives its result."""
    import json
    import threading

    from gradio_client import Client

    url, _, _ = open_app
    victim = Client(url + "/", verbose=False)
    assert server.CLIENT_COOKIE in victim.cookies
    job = victim.submit(files=[], notes="Fever, productive cough, crackles right base.", report=True,
                        api_name="/predict_json")
    spy = httpx.Client(base_url=url, timeout=60)
    spy.get("/config")                                           # a cookie of its own, as gradio_client gets
    deps = spy.get("/config").json()["dependencies"]
    fn = next(i for i, d in enumerate(deps) if d.get("api_name") == "predict_json")
    seen: list[str] = []

    def listen() -> None:
        with spy.stream("GET", "/gradio_api/queue/data", params={"session_hash": victim.session_hash}) as r:
            for line in r.iter_lines():
                seen.append(line)
                if "close_stream" in line or "process_completed" in line:
                    return

    join = spy.post("/gradio_api/queue/join", json={"data": [[], 12, True], "fn_index": fn, "trigger_id": None,
                                                     "session_hash": victim.session_hash, "event_data": None})
    assert join.status_code == 200, join.text
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    result = job.result(timeout=180)
    listener.join(timeout=60)
    assert set(result["findings"])                               # the victim got its own result
    done = [json.loads(line[5:]) for line in seen if line.startswith("data:") and "process_completed" in line]
    assert done and all(m["event_id"] == join.json()["event_id"] for m in done)     # the spy: its own event only
    assert "findings" not in "".join(seen) and "must be text" in "".join(seen)


def _multipart(boundary: bytes, names: list[bytes], disposition: bytes = b'filename="{}"') -> bytes:
    parts = [b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; '
             + disposition.replace(b"{}", n) + b"\r\nContent-Type: image/png\r\n\r\n\x89PNG0000\r\n" for n in names]
    return b"".join(parts) + b"--" + boundary + b"--\r\n"


@pytest.mark.parametrize("content_type, disposition", [
    (b"multipart/form-data; BOUNDARY=xYz123", b'filename="{}"'),
    (b"Multipart/Form-Data; boundary=\"xYz123\"", b'filename = "{}"'),
    (b"multipart/form-data; boundary=xYz123", b'FILENAME={}'),
    (b"multipart/form-data; boundary=xYz123", b"filename*=UTF-8''{}"),
])
def test_upload_header_spellings_are_renamed_and_capped(open_app, content_type: bytes, disposition: bytes) -> None:
    """The spellings gradio's parser accepts (upper-case BOUNDARY, a quoted boundary, spaces around '=', an
    upper-case FILENAME, RFC 5987) all get the random name, and the file cap holds for each."""
    url, _, _ = open_app
    http = httpx.Client(base_url=url, timeout=30)
    body = _multipart(b"xYz123", [b"Doe_John_MRN4471923.png"], disposition)
    r = http.post("/gradio_api/upload", content=body, headers={"content-type": content_type.decode()})
    if r.status_code == 200:
        (stored,) = r.json()
        assert Path(stored).name.startswith("upload-") and "Doe" not in stored and "MRN" not in stored
    else:                                           # a spelling gradio would not read as a file: refused, not kept
        assert r.status_code == 400 and "Traceback" not in r.text
    many = _multipart(b"xYz123", [f"Doe{i}.png".encode() for i in range(server.MAX_UPLOAD_FILES + 1)], disposition)
    r = http.post("/gradio_api/upload", content=many, headers={"content-type": content_type.decode()})
    assert r.status_code == 413 and "files" in r.text


def test_json_routes_refuse_big_bodies_before_reading_them(open_app) -> None:
    """A 100 MB notes payload is refused from its Content-Length (413) and a streamed one without a length once
    the cap is passed; the server's memory barely moves."""
    url, _, proc = open_app
    http = httpx.Client(base_url=url, timeout=60)

    def rss_mb() -> float:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

    before = rss_mb()
    notes = "x" * (100 * 1024 * 1024)
    for route in ("/gradio_api/call/predict_json", "/gradio_api/queue/join", "/gradio_api/run/predict"):
        r = http.post(route, content=b'{"data": [[], "' + notes.encode() + b'", true]}',
                      headers={"content-type": "application/json"})
        assert r.status_code == 413 and "MB" in r.text, route

    def chunks():
        yield b'{"data": [[], "'
        for _ in range(100):
            yield b"x" * (1024 * 1024)
        yield b'", true]}'

    streamed = http.post("/gradio_api/call/predict_json", content=chunks(),
                         headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert rss_mb() - before < 40


def test_value_free_pydicom_logs_and_warnings(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import warnings

    server.install_log_filters()
    from pydicom import config
    from pydicom.valuerep import validate_value

    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        inner = warnings.showwarning
        warnings.showwarning = server._value_free_showwarning(lambda m, *a, **k: shown.append(str(m)))
        with caplog.at_level(logging.WARNING, logger="pydicom"):
            validate_value("UI", "1.2.840.99.MRN4471923.19370214", config.WARN)   # pydicom's own check
        warnings.showwarning = inner
    assert "MRN4471923" not in caplog.text and "withheld" in caplog.text
    assert shown and not any("MRN4471923" in s for s in shown)


def test_state_holder_keeps_results_apart_from_empty_sessions_and_caps_each_client() -> None:
    """capped_state_holder: empty sessions (cheap events) evict only each other; each client holds at most
    RESULTS_PER_CLIENT results, all clients together STATE_SESSIONS; a session with an event pending stays."""
    from types import SimpleNamespace

    import app

    holder = app.capped_state_holder()()
    holder.capacity = server.STATE_SESSIONS
    holder.blocks = SimpleNamespace(_queue=SimpleNamespace(pending_event_ids_session={}))

    def add(sid: str, result: bool) -> None:
        holder.session_data[sid] = SimpleNamespace(state_data={1: object() if result else None, 2: None})
        holder.update(sid)

    victim = server.namespaced("victim", "cookie:victim")
    add(victim, True)
    running = server.namespaced("running", "cookie:other")
    add(running, False)
    holder.blocks._queue.pending_event_ids_session[running] = {"event"}
    for i in range(3 * server.STATE_SESSIONS):                   # the eviction attack: cheap events, fresh hashes
        add(server.namespaced(f"fresh{i}", "addr:10.0.0.9"), False)
    assert victim in holder.session_data and running in holder.session_data
    assert len(holder.session_data) <= server.EMPTY_SESSIONS + 2
    mine = [server.namespaced(f"mine{i}", "cookie:busy") for i in range(server.RESULTS_PER_CLIENT + 5)]
    for sid in mine:
        add(sid, True)
    assert victim in holder.session_data                           # another client's results do not push it out
    assert [sid in holder.session_data for sid in mine] == [False] * 5 + [True] * server.RESULTS_PER_CLIENT
