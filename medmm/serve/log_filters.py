"""Nothing identifying in the server log: value-free pydicom records and warnings, and gradio's request errors
logged by type only."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, Callable

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
