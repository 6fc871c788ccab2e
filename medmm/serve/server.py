"""Server hardening for the Gradio app: private cache folder, clean-up, HTTP limits and headers, launch settings.

Kept out of ``app.py`` so that it is testable without loading a model, and imports nothing of gradio at module
level (``prepare_cache`` must run before gradio is imported, because gradio reads ``GRADIO_TEMP_DIR`` then).

* ``prepare_cache(root)``: a fresh ``run-<pid>-<random>`` folder (mode 0700) under ``MEDMM_CACHE_DIR`` (default
  ``<app>/.cache/gradio``), exported as ``GRADIO_TEMP_DIR``; folders of earlier runs whose process is gone are
  removed first (a ``kill -9`` or a power cut leaves one behind).
* ``install_cleanup(path)``: SIGTERM is handled like SIGINT (gradio closes its server and ``launch`` returns), and
  the run folder is removed at exit (uploads, exports, everything gradio cached).
* ``SecurityMiddleware``: security headers on every response, and limits on every upload request (file count and
  total size, checked while the body streams) so that one request cannot fill the disk; a malformed upload gets
  a plain 400 instead of a traceback. Uploaded files are stored under random names (``upload-<hex>.<ext>``):
  the file name a client sends (often a patient's name or MRN) never reaches the disk or a served URL.
* Every other request body is capped (:data:`MAX_BODY_BYTES`, 413 before gradio reads it); multipart headers are
  read with python-multipart (what gradio's parser uses) and checked by it; session hashes are namespaced by client
  (``medmm_client`` cookie, else address), so one client never reaches another's state or messages.
* ``install_log_filters`` (value-free pydicom records and warnings; gradio logs request errors by type only).
  The two pieces that subclass or wrap gradio's own objects live in ``app.py`` (the only module that imports
  gradio): ``install_state_holder`` (results not evictable by cheap events) and ``guard_api`` (strict API input
  types, clear errors for too few values and paths never uploaded); their limits are here (``STATE_SESSIONS``,
  ``EMPTY_SESSIONS``, ``RESULTS_PER_CLIENT``).
* ``launch_kwargs``: ``run_history=False`` (no runs kept in the browser's localStorage), ``max_file_size``, the
  middleware, and optional login (``MEDMM_AUTH="user:password[,user2:password2]"``), see docs/app.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

MAX_UPLOAD_FILES = 8                    # = medmm.pipeline.MAX_SCANS: more files are refused by the pipeline anyway
MAX_UPLOAD_BYTES = 120 * 1024 * 1024    # one upload request, all files together
MAX_REPORT_CHARS = 20_000               # an edited report sent to /export or /check_consistency
MAX_NOTES_CHARS = 1_000_000             # notes sent to the API (the pipeline cuts them to 20,000 itself)
MAX_BODY_BYTES = 4 * 1024 * 1024        # any other request body (JSON of /queue/join, /run, /call): 1 M chars of notes
MAX_MCP_BODY_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + 1024 * 1024   # MCP tool calls carry files as base64 data: URIs
STATE_SESSIONS = 100                    # gr.State kept for at most this many sessions *with a result* (oldest dropped)
EMPTY_SESSIONS = 100                    # ... and this many sessions that hold nothing (cheap events' sessions)
RESULTS_PER_CLIENT = 10                 # sessions with a result one client (cookie, else address) may hold at once
CLIENT_COOKIE = "medmm_client"          # random per-browser/per-gradio_client id, binds session hashes to their client
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' data: blob:; worker-src 'self' blob:; "
       "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors {ancestors}")
_RUN_PREFIX = "run-"


# ------------------------------------------------------------------------------------------------ cache folder
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_cache(root: str | os.PathLike[str]) -> Path:
    """Create this run's private cache folder, set ``GRADIO_TEMP_DIR`` to it, remove dead runs' folders."""
    parent = Path(os.environ.get("MEDMM_CACHE_DIR") or Path(root) / ".cache" / "gradio")
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob(f"{_RUN_PREFIX}*"):
        m = re.fullmatch(rf"{_RUN_PREFIX}(\d+)-\w+", old.name)
        if m and old.is_dir() and not (_alive(int(m.group(1))) and int(m.group(1)) != os.getpid()):
            shutil.rmtree(old, ignore_errors=True)
    run = parent / f"{_RUN_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
    run.mkdir(mode=0o700)
    os.chmod(run, stat.S_IRWXU)
    os.environ["GRADIO_TEMP_DIR"] = str(run)
    atexit.register(shutil.rmtree, run, True)
    return run


def install_cleanup(run_dir: Path) -> None:
    """Make SIGTERM stop the server the way Ctrl-C does, so that ``run_dir`` is removed at exit as well."""
    atexit.register(shutil.rmtree, run_dir, True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # -> KeyboardInterrupt in the main thread


# ------------------------------------------------------------------------------------------------ HTTP
class _TooLarge(Exception):
    def __init__(self, message: str, status: int = 413) -> None:
        super().__init__(message)
        self.message, self.status = message, status


class _Malformed(Exception):
    """An upload that gradio's own multipart parser would read differently from what the limits checked."""


# gradio lets the *client* choose its session hash: the middleware namespaces every hash by client (cookie, else
# address), so two clients that send the same hash land in two separate gradio sessions
_SESSION_SECRET = secrets.token_bytes(32)
_SESSION_CLIENTS: OrderedDict[str, str] = OrderedDict()   # namespaced hash -> client, for per-client caps
_SESSION_CLIENTS_MAX = 10_000


def session_client(session_hash: str | None) -> str | None:
    """The client (``cookie:<id>``, ``addr:<host>`` or ``mcp``) whose requests use the namespaced ``session_hash``."""
    return _SESSION_CLIENTS.get(session_hash) if session_hash else None


def namespaced(session_hash: str, client: str) -> str:
    """The session hash gradio sees for ``client``'s ``session_hash`` (gradio's own MCP client: unchanged)."""
    if client == "mcp":
        return session_hash
    import hashlib
    import hmac

    ns = hmac.new(_SESSION_SECRET, f"{client}\0{session_hash}".encode(), hashlib.sha256).hexdigest()[:32]
    _SESSION_CLIENTS[ns] = client
    _SESSION_CLIENTS.move_to_end(ns)
    while len(_SESSION_CLIENTS) > _SESSION_CLIENTS_MAX:
        _SESSION_CLIENTS.popitem(last=False)
    return ns


def _namespace_scope(scope: dict, client: str) -> dict:
    """``scope`` with the session hash of its query string (``?session_hash=``) and of a heartbeat path
    (``.../heartbeat/<hash>``) namespaced for ``client``."""
    from urllib.parse import parse_qsl, urlencode

    query = scope.get("query_string", b"")
    if b"session_hash" in query:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        pairs = [(k, namespaced(v, client) if k == "session_hash" and v else v) for k, v in pairs]
        scope = {**scope, "query_string": urlencode(pairs).encode("latin-1")}
    path = scope.get("path", "")
    head, sep, tail = path.rpartition("/heartbeat/")
    if sep and tail and "/" not in tail:
        new = head + sep + namespaced(tail, client)
        scope = {**scope, "path": new, "raw_path": new.encode()}
    return scope


def _cookie(headers: dict[bytes, bytes], name: str) -> str | None:
    from http.cookies import SimpleCookie

    try:
        jar = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
    except Exception:  # noqa: BLE001 - a malformed cookie header: no id
        return None
    value = jar[name].value if name in jar else None
    return value if value and re.fullmatch(r"[A-Za-z0-9_-]{16,64}", value) else None


class SecurityMiddleware:
    """ASGI middleware: security headers on every HTTP response; a body cap on every request (413 from the
    Content-Length header and while the body streams, before gradio reads it); limits on upload requests (file
    count read by python-multipart, the parser gradio uses; every file name replaced); a client cookie, and every
    session hash namespaced by client (:func:`namespaced`): a client that sends another client's hash gets a
    session of its own, never the other's state or messages."""

    def __init__(self, app: Callable[..., Awaitable[None]], frame_ancestors: str | None = None,
                 max_files: int = MAX_UPLOAD_FILES, max_bytes: int = MAX_UPLOAD_BYTES,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        ancestors = frame_ancestors or os.environ.get("MEDMM_FRAME_ANCESTORS") or "'self'"
        self.headers = [
            (b"x-frame-options", b"SAMEORIGIN"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", CSP.format(ancestors=ancestors).encode()),
            (b"cache-control", b"no-store"),
        ]
        if ancestors != "'self'":  # e.g. Hugging Face Spaces embeds the app in a frame of its own site
            self.headers = [h for h in self.headers if h[0] != b"x-frame-options"]
        self.max_files, self.max_bytes, self.max_body_bytes = max_files, max_bytes, max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        cookie = _cookie(headers, CLIENT_COOKIE)
        # (none for MCP: gradio's MCP client would send the caller's cookie on some requests and its own on others)
        new_cookie = None if cookie or "/gradio_api/mcp" in scope.get("path", "") else secrets.token_urlsafe(24)
        host = (scope.get("client") or ("?", 0))[0]
        # gradio's MCP server calls the app through a gradio_client of its own, with the MCP caller's headers
        client = ("mcp" if headers.get(b"x-gradio-user") == b"mcp" else
                  f"cookie:{cookie}" if cookie else f"addr:{host}")

        rejected = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if rejected:
                return                      # our 413 went out: whatever the app answers after it is dropped
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in self.headers if h[0] not in names]
                if new_cookie:
                    extra.append((b"set-cookie", f"{CLIENT_COOKIE}={new_cookie}; Path=/; HttpOnly; "
                                                 f"SameSite=Strict".encode()))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        path, method = scope.get("path", "").rstrip("/"), scope.get("method", "GET")
        is_upload = method == "POST" and path.endswith("/upload")
        limit = (self.max_bytes if is_upload else
                 MAX_MCP_BODY_BYTES if "/gradio_api/mcp" in path else self.max_body_bytes)
        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        if length > limit:
            await self._reject(send_with_headers, 413, self._bytes_message(limit))
            return

        scope = _namespace_scope(scope, client)   # session hashes in the query (queue/data) and path (heartbeat)
        if is_upload:
            await self._upload(scope, receive, send_with_headers, headers, lambda: started)
            return
        if method == "POST" and (any(path.endswith(p) for p in ("/queue/join", "/cancel"))
                                 or "/run/" in path or "/call/" in path or path.endswith("/component_server")):
            await self._namespaced_json(scope, receive, send_with_headers, client, limit)
            return
        seen = 0

        async def capped_receive() -> dict:
            nonlocal seen, rejected
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # answer now: a framework that catches the error below would turn it into a 400
                    if not started:
                        await self._reject(send_with_headers, 413, self._bytes_message(limit))
                    rejected = True
                    raise _TooLarge(self._bytes_message(limit))
            return message

        try:
            await self.app(scope, capped_receive, send_with_headers)
        except _TooLarge as exc:
            if not started:
                await self._reject(send_with_headers, exc.status, exc.message)

    async def _namespaced_json(self, scope: dict, receive: Callable, send: Callable, client: str,
                               limit: int) -> None:
        """A request whose JSON body may name a session hash (join, run, call, cancel): read it (at most ``limit``
        bytes), namespace the hash (:func:`namespaced`), then hand gradio the rewritten body."""
        import json

        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                await self._reject(send, 413, self._bytes_message(limit))
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            payload = json.loads(body) if body else None
        except Exception:  # noqa: BLE001 - not JSON: gradio answers it (422)
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("session_hash"), str) and payload["session_hash"]:
            payload["session_hash"] = namespaced(payload["session_hash"], client)
            body = json.dumps(payload).encode()
            scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
                     + [(b"content-length", str(len(body)).encode())]}
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _upload(self, scope: dict, receive: Callable, send: Callable, headers: dict[bytes, bytes],
                      started: Callable[[], bool]) -> None:
        from python_multipart.multipart import parse_options_header

        kind, options = parse_options_header(headers.get(b"content-type", b""))   # case-insensitive, as gradio's
        boundary = options.get(b"boundary")
        if kind.lower() != b"multipart/form-data" or not boundary:
            await self._reject(send, 400, "Malformed upload.")
            return
        renamer = _UploadRenamer(b"--" + boundary)
        checker = _PartChecker(boundary, self.max_files)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                seen += len(body)
                if seen > self.max_bytes:
                    raise _TooLarge(self._bytes_message(self.max_bytes))
                body = renamer.feed(body, final=not message.get("more_body", False))
                checker.write(body)          # what gradio's parser will read: counted and checked first
                message = {**message, "body": body}
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge as exc:
            if not started():
                await self._reject(send, exc.status, exc.message)
        except Exception as exc:  # noqa: BLE001 - a malformed upload: no traceback, no file names in logs
            log.warning("upload rejected: %s", type(exc).__name__)
            if not started():
                await self._reject(send, 400, "Malformed upload.")

    def _bytes_message(self, limit: int) -> str:
        return f"Requests to this address are limited to {limit / (1024 * 1024):g} MB."

    @staticmethod
    async def _reject(send: Callable, status: int, text: str) -> None:
        body = text.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _PartChecker:
    """Reads the (renamed) upload body with python-multipart, the parser gradio itself uses, while it streams:
    more than ``max_files`` parts -> :class:`_TooLarge`; a part whose Content-Disposition, as that parser reads it,
    still carries a file name other than ``upload-<hex>`` -> :class:`_Malformed` (so no header spelling the
    renamer did not recognise can bring a client's file name through)."""

    def __init__(self, boundary: bytes, max_files: int) -> None:
        from python_multipart.multipart import MultipartParser

        self.max_files, self.parts = max_files, 0
        self.field, self.value = b"", b""
        self.parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin, "on_header_field": self._field, "on_header_value": self._value,
            "on_header_end": self._header_end})

    def write(self, data: bytes) -> None:
        if data:
            self.parser.write(data)

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_files:
            raise _TooLarge(f"At most {self.max_files} files per upload.")

    def _field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def _header_end(self) -> None:
        from python_multipart.multipart import parse_options_header

        field, value, self.field, self.value = self.field, self.value, b"", b""
        if field.strip().lower() == b"content-disposition":
            name = parse_options_header(value)[1].get(b"filename")
            if name is not None and not re.fullmatch(rb"upload-[0-9a-f]{16}(\.[a-z0-9]{1,5})?", name):
                raise _Malformed("a file name was not replaced")


class _UploadRenamer:
    """Rewrites the ``Content-Disposition`` header of every multipart part that names a file to
    ``form-data; name="<field>"; filename="upload-<random hex>.<ext>"`` while the body streams (the extension is
    kept when it is a short alphanumeric one; the loaders sniff content anyway). The header is read with
    python-multipart's ``parse_options_header`` (what gradio's parser uses), so any spelling it accepts
    (``FILENAME=``, ``filename = "x"``, ``filename*=``) is replaced; :class:`_PartChecker` refuses what is left.

    Only part headers are touched - the text right after a boundary delimiter, which by the multipart rules
    cannot occur inside a file's bytes - so file contents pass through unchanged. A header block cut by a chunk
    edge is held back (at most ``HOLD`` bytes) until the next chunk completes it.
    """

    HOLD = 16 * 1024   # longer than any part header block a browser or gradio_client sends

    def __init__(self, delimiter: bytes) -> None:
        # a part's header block: the header lines between its delimiter and the first empty line
        self.block = re.compile(re.escape(delimiter) + rb"[ \t]*\r\n((?:[^\r\n]+\r\n)+)\r\n")
        self.delimiter, self.carry = delimiter, b""

    def feed(self, body: bytes, final: bool) -> bytes:
        buf, self.carry = self.carry + body, b""
        cut = len(buf)
        if not final:
            cut = max(0, len(buf) - self.HOLD)
            last = buf.rfind(self.delimiter, 0, cut + len(self.delimiter))  # a delimiter ending after the cut too
            if last != -1 and last + self.HOLD > cut:
                cut = last                                                 # its header block may not be complete
            buf, self.carry = buf[:cut], buf[cut:]
        return self.block.sub(self._rename_block, buf)

    @staticmethod
    def _rename_block(m: re.Match) -> bytes:
        """The part's Content-Disposition line, when it names a file, becomes one with a random name."""
        from python_multipart.multipart import parse_options_header

        lines = m.group(1).split(b"\r\n")[:-1]
        out = []
        for line in lines:
            name, sep, value = line.partition(b":")
            if sep and name.strip().lower() == b"content-disposition" and b"filename" in value.lower():
                _, options = parse_options_header(value.strip())
                star = re.search(rb"filename\*\s*=\s*([^;]*)", value, re.IGNORECASE)
                given = options.get(b"filename") or (star.group(1).strip().strip(b'"').rsplit(b"'", 1)[-1]
                                                     if star else b"")
                ext = re.search(rb"\.([A-Za-z0-9]{1,5})$", given or b"")
                new = b"upload-" + secrets.token_hex(8).encode() + (b"." + ext.group(1).lower() if ext else b"")
                field = options.get(b"name", b"files").replace(b'"', b"").replace(b"\\", b"")
                line = b'Content-Disposition: form-data; name="' + field + b'"; filename="' + new + b'"'
                if star:                                           # both forms carry the same new name
                    line += b"; filename*=UTF-8''" + new
            out.append(line)
        body = b"\r\n".join(out) + b"\r\n"
        return m.group(0)[: m.start(1) - m.start(0)] + body + m.group(0)[m.end(1) - m.start(0):]


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """``"user:password[,user2:password2]"`` -> gradio ``auth`` list, or None (no login) when unset/empty."""
    if not value:
        return None
    pairs = []
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise ValueError("MEDMM_AUTH must be 'user:password' pairs separated by commas")
        pairs.append((user, password))
    return pairs


def launch_kwargs(max_file_size: str) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` (see the module docstring)."""
    from starlette.middleware import Middleware

    kwargs: dict[str, Any] = {
        "max_file_size": max_file_size,
        "run_history": False,
        "app_kwargs": {"middleware": [Middleware(SecurityMiddleware)]},
        "show_error": False,
        # every raw-API call is a new session whose state (result + viewer image, up to ~5 MB) gradio would
        # otherwise keep for up to 10,000 sessions until its time-to-live: bound it
        "state_session_capacity": STATE_SESSIONS,
    }
    auth = parse_auth(os.environ.get("MEDMM_AUTH"))
    if auth:
        kwargs["auth"] = auth
        kwargs["auth_message"] = "medmm research demo: sign in"
    return kwargs


def text_input(value: Any, what: str, max_chars: int) -> str:
    """A free-text API input: None -> "", anything but a string -> ValueError, longer than ``max_chars`` -> ValueError."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"The {what} must be text.")
    if len(value) > max_chars:
        raise ValueError(f"Text longer than {max_chars:,} characters was sent as the {what}: shorten it.")
    return value


# ------------------------------------------------------------------------------------------------ logs
VALUE_FREE = "{name}: a {level} message was withheld (it may quote DICOM header values)"


class ValueFreeFilter(logging.Filter):
    """Replaces the message of every record from pydicom (``pydicom`` and its child loggers) with a value-free
    one: pydicom quotes the offending value (an invalid UID such as ``1.2.840.99.MRN4471923.19370214``, a name,
    a date) in its validation messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "pydicom" or record.name.startswith("pydicom."):
            record.msg = VALUE_FREE.format(name=record.name, level=record.levelname.lower())
            record.args, record.exc_info, record.exc_text, record.stack_info = (), None, None, None
        return True


_FILTER = ValueFreeFilter()


def _from_pydicom(filename: str) -> bool:
    import importlib.util

    spec = importlib.util.find_spec("pydicom")
    roots = [os.path.dirname(spec.origin)] if spec and spec.origin else []
    path = os.path.abspath(filename or "")
    return any(path.startswith(root + os.sep) for root in roots)


def _value_free_showwarning(show: Callable[..., None]) -> Callable[..., None]:
    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' API
        if _from_pydicom(filename):
            message = VALUE_FREE.format(name="pydicom", level="warning")
        return show(message, category, filename, lineno, file, line)

    showwarning.medmm_value_free = True  # type: ignore[attr-defined]
    return showwarning


class _TypeOnlyTraceback:
    """Stands in for the ``traceback`` module inside gradio's request handling: gradio prints the traceback of
    every unexpected error (``traceback.print_exc()``), and those messages quote the inputs (a call with too few
    arguments lists them under "Received inputs"; a preprocessing error repeats the value). Logs the type only."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def print_exc(self, *args: Any, **kwargs: Any) -> None:
        exc = sys.exc_info()[1]
        logging.getLogger("medmm.gradio").error("request failed in gradio: %s", type(exc).__name__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install_log_filters() -> None:
    """Nothing identifying in the server log: pydicom's log records and warnings lose their values, and gradio
    logs the type of an unexpected request error, never its message (which can quote notes). Idempotent; call it
    again after configuring logging so that the root handlers get the filter as well."""
    import traceback

    for name in ["pydicom", *[n for n in logging.root.manager.loggerDict if n.startswith("pydicom.")]]:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    if not getattr(warnings.showwarning, "medmm_value_free", False):
        warnings.showwarning = _value_free_showwarning(warnings.showwarning)
    for module in ("gradio.queueing", "gradio.routes", "gradio.utils", "gradio.route_utils", "gradio.blocks"):
        mod = sys.modules.get(module)
        if mod is not None and isinstance(getattr(mod, "traceback", None), type(traceback)):
            mod.traceback = _TypeOnlyTraceback(traceback)


