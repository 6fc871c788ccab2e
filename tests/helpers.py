"""Shared test helpers (paths to ../shared, tiny models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmm.training.data import SHARED_DATA  # ../shared/data, or $MEDMM_SHARED_DATA: the one definition


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (see shared/README.md)")
    return path
