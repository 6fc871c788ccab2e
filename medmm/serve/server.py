"""Server hardening for the Gradio app: the launch settings, and one import for ``app.py`` of the pieces beside it.

Kept out of ``app.py`` so that it is testable without loading a model, and imports nothing of gradio at module
level (``prepare_cache`` must run before gradio is imported, because gradio reads ``GRADIO_TEMP_DIR`` then).

* ``cache_dir``: ``prepare_cache(root)``, a fresh ``run-<pid>-<random>`` folder (mode 0700) under ``MEDMM_CACHE_DIR``
  (default ``<app>/.cache/gradio``), exported as ``GRADIO_TEMP_DIR``; folders of earlier runs whose process is gone
  are removed first (a ``kill -9`` or a power cut leaves one behind). ``install_cleanup(path)``: SIGTERM is handled
  like SIGINT (gradio closes its server and ``launch`` returns), and the run folder is removed at exit (uploads,
  exports, everything gradio cached).
* ``middleware``: ``SecurityMiddleware``, security headers on every response, and limits on every upload request
  (file count and total size, checked while the body streams) so that one request cannot fill the disk; a malformed
  upload gets a plain 400 instead of a traceback. Every other request body is capped (:data:`MAX_BODY_BYTES`, 413
  before gradio reads it).
* ``uploads``: uploaded files are stored under random names (``upload-<hex>.<ext>``): the file name a client sends
  (often a patient's name or MRN) never reaches the disk or a served URL; multipart headers are read with
  python-multipart (what gradio's parser uses) and checked by it.
* ``sessions``: session hashes are namespaced by client (``medmm_client`` cookie, else address), so one client never
  reaches another's state or messages. The two pieces that subclass or wrap gradio's own objects live in ``app.py``
  (the only module that imports gradio): ``install_state_holder`` (results not evictable by cheap events) and
  ``guard_api`` (strict API input types, clear errors for too few values and paths never uploaded); their limits are
  there (``STATE_SESSIONS``, ``EMPTY_SESSIONS``, ``RESULTS_PER_CLIENT``).
* ``log_filters``: ``install_log_filters`` (value-free pydicom records and warnings; gradio logs request errors by
  type only).
* here: ``launch_kwargs``, ``run_history=False`` (no runs kept in the browser's localStorage), ``max_file_size``, the
  middleware, and optional login (``MEDMM_AUTH="user:password[,user2:password2]"``), see docs/app.md; the limits on
  free-text API inputs (``text_input``).
"""

from __future__ import annotations

import os
from typing import Any

from medmm.serve.cache_dir import install_cleanup, prepare_cache
from medmm.serve.log_filters import (VALUE_FREE, ValueFreeFilter, _value_free_showwarning,
                                     install_log_filters)
from medmm.serve.middleware import CSP, MAX_BODY_BYTES, MAX_MCP_BODY_BYTES, SecurityMiddleware
from medmm.serve.sessions import (CLIENT_COOKIE, EMPTY_SESSIONS, RESULTS_PER_CLIENT, STATE_SESSIONS, namespaced,
                                  session_client)
from medmm.serve.uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_FILES, UploadRenamer

MAX_REPORT_CHARS = 20_000               # an edited report sent to /export or /check_consistency
MAX_NOTES_CHARS = 1_000_000             # notes sent to the API (the pipeline cuts them to 20,000 itself)


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


__all__ = ["CLIENT_COOKIE", "CSP", "EMPTY_SESSIONS", "MAX_BODY_BYTES", "MAX_MCP_BODY_BYTES", "MAX_NOTES_CHARS",
           "MAX_REPORT_CHARS", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_FILES", "RESULTS_PER_CLIENT", "STATE_SESSIONS",
           "SecurityMiddleware", "VALUE_FREE", "ValueFreeFilter", "UploadRenamer", "_value_free_showwarning",
           "install_cleanup", "install_log_filters", "launch_kwargs", "namespaced", "parse_auth", "prepare_cache",
           "session_client", "text_input"]
