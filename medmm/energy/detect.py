"""Which sources this machine has (NVML, RAPL, else the CPU-time estimate), and its idle power per component."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from medmm.energy.cpu_estimate import CpuTimeEstimateSource
from medmm.energy.nvml import find_nvml_source
from medmm.energy.rapl import POWERCAP_ROOT, find_rapl_sources
from medmm.energy.source import EnergySource

logger = logging.getLogger(__name__)


def detect_sources(*, nvml: Any | None = None, powercap_root: Path = POWERCAP_ROOT,
                   read_int: Callable[[Path], int] | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> tuple[EnergySource, ...]:
    """Pick sources: NVML GPU (if any) + RAPL package/DRAM (if readable), else the CPU-time estimate."""
    sources: list[EnergySource] = []
    gpu = find_nvml_source(nvml, clock=clock)
    if gpu is not None:
        sources.append(gpu)
    rapl = find_rapl_sources(powercap_root, read_int=read_int, clock=clock)
    sources.extend(rapl)
    if not any(s.component == "cpu_package" for s in rapl):
        sources.append(CpuTimeEstimateSource(clock=clock))
    logger.info("energy sources: %s", ", ".join(f"{s.component}:{s.counter_method}" for s in sources))
    return tuple(sources)


@lru_cache(maxsize=1)
def default_sources() -> tuple[EnergySource, ...]:
    """Sources detected once per process and shared by every meter, so overlapping requests split one counter.

    This cache is the meter's own bookkeeping (hardware handles and counter ledgers), never request data.
    """
    return detect_sources()


def measure_idle_baseline(sources: Sequence[EnergySource] | None = None, seconds: float = 2.0,
                          sleep: Callable[[float], None] = time.sleep) -> dict[str, float]:
    """Idle power (W) per machine-wide component, measured over ``seconds`` while nothing runs.

    Call once at startup, before serving, and pass the result as ``EnergyMeter(baseline_watts=...)``.
    The CPU-time estimate has no idle share and is skipped.
    """
    sources = default_sources() if sources is None else sources
    real = [s for s in sources if s.machine_wide]
    if not real:
        return {}
    first = [s._probe() for s in real]
    sleep(seconds)
    out: dict[str, float] = {}
    for s, (t0, r0) in zip(real, first):
        t1, r1 = s._probe()
        dt = t1 - t0
        if dt <= 0:
            continue
        if r0.joules is not None and r1.joules is not None and r1.joules > r0.joules:
            watts = (r1.joules - r0.joules) / dt
        elif r0.watts is not None and r1.watts is not None:
            watts = 0.5 * (r0.watts + r1.watts)
        else:
            continue
        out[s.component] = out.get(s.component, 0.0) + watts
    return out
