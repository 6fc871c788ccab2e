"""What a request's meter reports: joules per component and per stage, the method and its uncertainty."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ComponentEnergy:
    """Energy of one hardware component over a window, and how it was obtained."""

    joules: float
    method: str


@dataclass(frozen=True)
class StageEnergy:
    """Energy and wall time of one named stage of a request."""

    joules: float
    duration_s: float


@dataclass(frozen=True)
class EnergyRecord:
    """Energy used by one request. Treat the mappings as read-only.

    ``stages`` is ordered by first entry; it is empty if no stage was used, else it ends with
    ``"other"`` for time spent outside any named stage, so stage joules sum to ``joules``.
    """

    joules: float
    duration_s: float
    components: Mapping[str, ComponentEnergy]
    stages: Mapping[str, StageEnergy]
    method: str
    uncertainty: str
    grid_intensity_g_per_kwh: float

    @property
    def wh(self) -> float:
        """Watt-hours (J / 3600)."""
        return self.joules / 3600.0

    @property
    def gco2e(self) -> float:
        """Grams CO2e: kWh x grid intensity (gCO2e/kWh)."""
        return self.joules * self.grid_intensity_g_per_kwh / 3.6e6

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (plain floats/strings)."""
        return {
            "joules": self.joules,
            "wh": self.wh,
            "gco2e": self.gco2e,
            "duration_s": self.duration_s,
            "components": {k: {"joules": c.joules, "method": c.method} for k, c in self.components.items()},
            "method": self.method,
            "uncertainty": self.uncertainty,
            "grid_intensity_g_per_kwh": self.grid_intensity_g_per_kwh,
            "stages": {k: {"joules": s.joules, "duration_s": s.duration_s} for k, s in self.stages.items()},
        }
