"""``SecurityMiddleware``: security headers, body caps, upload limits and per-client sessions on every request."""

from __future__ import annotations

import logging
import os
import secrets
from typing import Awaitable, Callable

from medmm.serve.sessions import CLIENT_COOKIE, cookie_value, namespace_scope, namespaced
from medmm.serve.uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_FILES, PartChecker, TooLarge, UploadRenamer

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024        # any other request body (JSON of /queue/join, /run, /call): 1 M chars of notes
MAX_MCP_BODY_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + 1024 * 1024   # MCP tool calls carry files as base64 data: URIs
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' data: blob:; worker-src 'self' blob:; "
       "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors {ancestors}")


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
        cookie = cookie_value(headers, CLIENT_COOKIE)
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

        scope = namespace_scope(scope, client)   # session hashes in the query (queue/data) and path (heartbeat)
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
                    raise TooLarge(self._bytes_message(limit))
            return message

        try:
            await self.app(scope, capped_receive, send_with_headers)
        except TooLarge as exc:
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
        renamer = UploadRenamer(b"--" + boundary)
        checker = PartChecker(boundary, self.max_files)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                seen += len(body)
                if seen > self.max_bytes:
                    raise TooLarge(self._bytes_message(self.max_bytes))
                body = renamer.feed(body, final=not message.get("more_body", False))
                checker.write(body)          # what gradio's parser will read: counted and checked first
                message = {**message, "body": body}
            return message

        try:
            await self.app(scope, limited_receive, send)
        except TooLarge as exc:
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
