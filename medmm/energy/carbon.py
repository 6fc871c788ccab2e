"""Carbon intensity of the electricity (gCO2e/kWh) that turns a request's joules into CO2e."""

from __future__ import annotations

import logging
import math
import os

logger = logging.getLogger(__name__)

# World-average carbon intensity of electricity generation, 475 gCO2/kWh (2018), IEA "Global Energy &
# CO2 Status Report 2019"; also CodeCarbon's "world_average" fallback. Never looked up over the network.
DEFAULT_GRID_INTENSITY_G_PER_KWH = 475.0
GRID_INTENSITY_ENV = "MEDMM_GRID_INTENSITY_G_PER_KWH"


def resolve_grid_intensity(value: float | None = None) -> float:
    """Grid intensity in gCO2e/kWh: explicit value, else env ``MEDMM_GRID_INTENSITY_G_PER_KWH``, else 475 (IEA world average)."""
    if value is not None:
        value = float(value)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"grid intensity must be a finite number >= 0 gCO2e/kWh, got {value!r}")
        return value
    raw = os.environ.get(GRID_INTENSITY_ENV, "").strip()
    if raw:
        try:
            env_value = float(raw)
        except ValueError:
            env_value = -1.0
        if math.isfinite(env_value) and env_value >= 0:
            return env_value
        logger.warning("ignoring %s=%r (not a number >= 0); using %s", GRID_INTENSITY_ENV, raw,
                       DEFAULT_GRID_INTENSITY_G_PER_KWH)
    return DEFAULT_GRID_INTENSITY_G_PER_KWH
