"""Per-request energy accounting: GPU via NVML, CPU via RAPL, else an estimate from CPU time.

Why: every demo request shows the energy it used (and the CO2e that implies), split into stages
(``load``, ``inference``, ``explanation``, ``report``), with the method and its uncertainty stated.

Usage (one meter per request; nothing about a request is kept in module state)::

    meter = EnergyMeter()
    with meter:
        with meter.stage("inference"):
            ...
    meter.record.to_dict()

Attribution rule (documented in docs/energy.md): every source is a cumulative counter (NVML board
energy, RAPL package/DRAM energy, or this process's CPU time x watts per core). Each source object is
shared process-wide (see :func:`default_sources`) and keeps a ledger of the meter windows open on it.
At every window event (start, stage change, stop) the counter is read, and the energy since the
previous event is split EQUALLY among the windows open during that segment (and credited to each
window's current stage). Overlapping requests therefore never count the same joule twice, and the
split is deterministic. Equal split, not a split by CPU time: GPU work does not show up in CPU time,
and torch's intra-op worker threads cannot be attributed to the calling request's thread.

Where each part lives:

* ``source``: the source interface (``EnergySource.read`` -> ``Reading``) and its ledger; the method tags;
* ``nvml``, ``rapl``, ``cpu_estimate``: one module per source (GPU board, CPU package / DRAM, CPU-time estimate);
* ``detect``: which sources this machine has (``detect_sources``, the shared ``default_sources``) and its idle
  power (``measure_idle_baseline``);
* ``carbon``: the grid's carbon intensity (gCO2e/kWh);
* ``meter`` and ``record``: the per-request accounting (``EnergyMeter``) and what it reports (``EnergyRecord``).

Heavy imports (torch, pynvml) are deferred; torch is only used if the caller already imported it.
"""

from medmm.energy.carbon import DEFAULT_GRID_INTENSITY_G_PER_KWH, GRID_INTENSITY_ENV, resolve_grid_intensity
from medmm.energy.cpu_estimate import DEFAULT_CPU_WATTS_PER_CORE, CpuTimeEstimateSource
from medmm.energy.detect import default_sources, detect_sources, measure_idle_baseline
from medmm.energy.meter import EnergyMeter
from medmm.energy.nvml import NvmlSource, find_nvml_source
from medmm.energy.rapl import POWERCAP_ROOT, RaplSource, find_rapl_sources
from medmm.energy.record import ComponentEnergy, EnergyRecord, StageEnergy
from medmm.energy.source import (METHOD_ESTIMATE, METHOD_NVML_COUNTER, METHOD_NVML_POWER, METHOD_RAPL, OTHER_STAGE,
                                 EnergySource, Reading)

__all__ = [
    "DEFAULT_CPU_WATTS_PER_CORE", "DEFAULT_GRID_INTENSITY_G_PER_KWH", "GRID_INTENSITY_ENV", "METHOD_ESTIMATE",
    "METHOD_NVML_COUNTER", "METHOD_NVML_POWER", "METHOD_RAPL", "OTHER_STAGE", "POWERCAP_ROOT", "ComponentEnergy",
    "CpuTimeEstimateSource", "EnergyMeter", "EnergyRecord", "EnergySource", "NvmlSource", "RaplSource", "Reading",
    "StageEnergy", "default_sources", "detect_sources", "find_nvml_source", "find_rapl_sources",
    "measure_idle_baseline", "resolve_grid_intensity",
]
