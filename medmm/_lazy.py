"""Lazy re-exports (PEP 562) for the subpackages whose modules import torch.

``from medmm.models import create_model`` imports ``medmm.models.model`` on first use only, so importing a
torch-free sibling (``medmm.models.notes_expert``, ``medmm.explain.methods``) or the package itself stays
torch-free: the CLI parses its arguments, and the app starts, before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name of ``exports`` comes from ``package.<submodule>``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(importlib.import_module(package), name, value)  # later look-ups are plain attributes
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return __getattr__, __dir__
