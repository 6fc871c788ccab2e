"""Gradio sessions bound to their client: a client cookie, session hashes namespaced by client, and the limits on
the sessions gradio keeps (``app.py``'s state holder reads them)."""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict

STATE_SESSIONS = 100                    # gr.State kept for at most this many sessions *with a result* (oldest dropped)
EMPTY_SESSIONS = 100                    # ... and this many sessions that hold nothing (cheap events' sessions)
RESULTS_PER_CLIENT = 10                 # sessions with a result one client (cookie, else address) may hold at once
CLIENT_COOKIE = "medmm_client"          # random per-browser/per-gradio_client id, binds session hashes to their client

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


def namespace_scope(scope: dict, client: str) -> dict:
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


def cookie_value(headers: dict[bytes, bytes], name: str) -> str | None:
    from http.cookies import SimpleCookie

    try:
        jar = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
    except Exception:  # noqa: BLE001 - a malformed cookie header: no id
        return None
    value = jar[name].value if name in jar else None
    return value if value and re.fullmatch(r"[A-Za-z0-9_-]{16,64}", value) else None
