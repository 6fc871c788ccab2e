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
from pathlib import Path
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

MAX_UPLOAD_FILES = 8                    # = medmm.pipeline.MAX_SCANS: more files are refused by the pipeline anyway
MAX_UPLOAD_BYTES = 120 * 1024 * 1024    # one upload request, all files together
MAX_REPORT_CHARS = 20_000               # an edited report sent to /export or /check_consistency
STATE_SESSIONS = 100                    # gradio keeps gr.State for at most this many sessions (oldest dropped first)
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
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SecurityMiddleware:
    """ASGI middleware: security headers on every HTTP response; limits on upload requests."""

    def __init__(self, app: Callable[..., Awaitable[None]], frame_ancestors: str | None = None,
                 max_files: int = MAX_UPLOAD_FILES, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
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
        self.max_files, self.max_bytes = max_files, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in self.headers if h[0] not in names]
            await send(message)

        if not (scope.get("method") == "POST" and scope.get("path", "").rstrip("/").endswith("/upload")):
            await self.app(scope, receive, send_with_headers)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        if length > self.max_bytes:
            await self._reject(send_with_headers, 413, self._bytes_message())
            return
        boundary = re.search(rb"boundary=\"?([^\";]+)", headers.get(b"content-type", b""))
        delimiter = b"--" + boundary.group(1) if boundary else None
        renamer = _UploadRenamer(delimiter) if delimiter else None
        seen, parts, tail = 0, 0, b""

        async def limited_receive() -> dict:
            nonlocal seen, parts, tail
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                seen += len(body)
                if seen > self.max_bytes:
                    raise _TooLarge(self._bytes_message())
                if delimiter:
                    chunk = tail + body
                    parts += chunk.count(delimiter) - tail.count(delimiter)
                    tail = chunk[-len(delimiter):]
                    if parts - 1 > self.max_files:  # the closing delimiter is one more
                        raise _TooLarge(f"At most {self.max_files} files per upload.")
                if renamer:
                    message = {**message, "body": renamer.feed(body, final=not message.get("more_body", False))}
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _TooLarge as exc:
            if not started:
                await self._reject(send_with_headers, 413, exc.message)
        except Exception as exc:  # noqa: BLE001 - a malformed upload: no traceback, no file names in logs
            log.warning("upload rejected: %s", type(exc).__name__)
            if not started:
                await self._reject(send_with_headers, 400, "Malformed upload.")

    def _bytes_message(self) -> str:
        return f"Uploads are limited to {self.max_bytes // (1024 * 1024)} MB per request."

    @staticmethod
    async def _reject(send: Callable, status: int, text: str) -> None:
        body = text.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _UploadRenamer:
    """Rewrites the ``filename="..."`` of every multipart part header to ``upload-<random hex>.<ext>`` while the
    body streams (the extension is kept when it is a short alphanumeric one; the loaders sniff content anyway).

    Only part headers are touched - the text right after a boundary delimiter, which by the multipart rules
    cannot occur inside a file's bytes - so file contents pass through unchanged. A header block cut by a chunk
    edge is held back (at most ``HOLD`` bytes) until the next chunk completes it.
    """

    HOLD = 16 * 1024   # longer than any part header block a browser or gradio_client sends

    def __init__(self, delimiter: bytes) -> None:
        # a part's header block: the header lines between its delimiter and the first empty line
        self.block = re.compile(re.escape(delimiter) + rb"\r\n((?:[^\r\n]+\r\n)+)\r\n")
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
        """Every ``filename=`` / ``filename*=`` of one part gets the same random name (extension kept)."""
        params = list(_FILENAME.finditer(m.group(1)))
        if not params:
            return m.group(0)
        name = params[0].group(2).strip(b'"').rsplit(b"'", 1)[-1]   # filename*=UTF-8''name.ext -> name.ext
        ext = re.search(rb"\.([A-Za-z0-9]{1,5})$", name)
        new = b"upload-" + secrets.token_hex(8).encode() + (b"." + ext.group(1).lower() if ext else b"")

        def put(p: re.Match) -> bytes:
            return p.group(1) + (b"UTF-8''" + new if p.group(1).endswith(b"*=") else b'"' + new + b'"')

        headers = _FILENAME.sub(put, m.group(1))
        return m.group(0)[: m.start(1) - m.start(0)] + headers + m.group(0)[m.end(1) - m.start(0):]


_FILENAME = re.compile(rb"(\bfilename\*?=)(\"[^\"\r\n]*\"|[^;\r\n]*)", re.IGNORECASE)


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
        raise ValueError(f"The {what} is longer than {max_chars:,} characters.")
    return value
