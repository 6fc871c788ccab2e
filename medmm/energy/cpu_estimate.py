"""The fallback when no counter is readable: this process's CPU time x watts per busy core (an estimate)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from medmm.energy.source import METHOD_ESTIMATE, EnergySource, Reading

# Active power per busy CPU-second for the estimate: AMD EPYC 7763 (a common cloud server CPU),
# 280 W default TDP / 64 cores = 4.375 W per core (AMD product page; same TDP in CodeCarbon's
# cpu_power.csv). torch's default intra-op thread count is the number of physical cores, so CPU
# seconds are roughly core seconds. Marginal power only: idle power is not included.
DEFAULT_CPU_WATTS_PER_CORE = 280.0 / 64


class CpuTimeEstimateSource(EnergySource):
    """Estimate: this process's CPU time (user+sys, all threads) x watts per busy core. Not a measurement.

    Process-wide, so overlapping requests share it by the same equal-split rule. Marginal power only
    (no idle share), so no baseline is subtracted. Child processes are not counted.
    """

    component = "cpu"
    counter_method = METHOD_ESTIMATE
    machine_wide = False

    def __init__(self, watts_per_core: float = DEFAULT_CPU_WATTS_PER_CORE, *,
                 cpu_time: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(clock)
        if not (math.isfinite(watts_per_core) and watts_per_core > 0):
            raise ValueError(f"watts_per_core must be a positive number, got {watts_per_core!r}")
        self.watts_per_core = float(watts_per_core)
        self._cpu_time = cpu_time

    def read(self) -> Reading:
        return Reading(self._cpu_time() * self.watts_per_core)

    def note(self, method: str) -> str:
        return (f"cpu: ±50%; estimate from process CPU time x {self.watts_per_core:g} W per busy core, "
                f"not a measurement.")
