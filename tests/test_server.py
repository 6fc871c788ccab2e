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
    renamer, out = server._UploadRenamer(d), b""
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
    out = server._UploadRenamer(d).feed(body, final=True)
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
