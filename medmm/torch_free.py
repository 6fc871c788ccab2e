"""Keeping torch out of a process that does not need it.

A prediction from cached graphs needs no torch (``medmm.runtime.graphs``), but one library on the notes' path imports
it anyway: spaCy's thinc runs ``import torch`` at import time (2.6 s here) only to offer optional PyTorch layers, which
medspaCy's rule-based pipeline never uses. ``hide_torch()`` around such an import makes ``import torch`` fail *in the
importing thread only*, as if torch were not installed (the library then takes its own no-torch branch); other
threads import torch as usual, and where torch is already imported nothing changes.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
import threading
from typing import Iterator

_HIDDEN = ("torch",)


class _Hider(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: refuses the hidden packages to a thread inside ``hide_torch``."""

    def __init__(self) -> None:
        self.local = threading.local()

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 - the finder protocol
        if getattr(self.local, "depth", 0) and name.partition(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"{name} is not imported here (medmm.torch_free.hide_torch)", name=name)
        return None


_FINDER = _Hider()
_INSTALL = threading.Lock()


@contextlib.contextmanager
def hide_torch() -> Iterator[None]:
    """Within: ``import torch`` in this thread raises ``ModuleNotFoundError`` unless torch is already imported."""
    if "torch" in sys.modules:
        yield
        return
    with _INSTALL:
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
    _FINDER.local.depth = getattr(_FINDER.local, "depth", 0) + 1
    try:
        yield
    finally:
        _FINDER.local.depth -= 1


__all__ = ["hide_torch"]
