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

Heavy imports (torch, pynvml) are deferred; torch is only used if the caller already imported it.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

# World-average carbon intensity of electricity generation, 475 gCO2/kWh (2018), IEA "Global Energy &
# CO2 Status Report 2019"; also CodeCarbon's "world_average" fallback. Never looked up over the network.
DEFAULT_GRID_INTENSITY_G_PER_KWH = 475.0
GRID_INTENSITY_ENV = "MEDMM_GRID_INTENSITY_G_PER_KWH"

# Active power per busy CPU-second for the estimate: AMD EPYC 7763 (a common cloud server CPU),
# 280 W default TDP / 64 cores = 4.375 W per core (AMD product page; same TDP in CodeCarbon's
# cpu_power.csv). torch's default intra-op thread count is the number of physical cores, so CPU
# seconds are roughly core seconds. Marginal power only: idle power is not included.
DEFAULT_CPU_WATTS_PER_CORE = 280.0 / 64

POWERCAP_ROOT = Path("/sys/class/powercap")
OTHER_STAGE = "other"

METHOD_NVML_COUNTER = "nvml-counter"
METHOD_NVML_POWER = "nvml-power-x-time"
METHOD_RAPL = "rapl"
METHOD_ESTIMATE = "estimate-cpu-time"

_EXCLUSIONS_NOTE = "Excludes PSU losses, cooling (PUE), network and storage."


class Reading(NamedTuple):
    """One sample of a source: cumulative joules (None if no counter) and instantaneous watts (None if no power)."""

    joules: float | None
    watts: float | None = None


@dataclass
class _Account:
    """One window's share of one source, per stage (the ledger's bookkeeping, not user data)."""

    stage: str
    split: bool = True                    # False: observer window (whole delta, not counted in k)
    counter: dict[str, float] = field(default_factory=dict)
    power: dict[str, float] = field(default_factory=dict)
    time_share: dict[str, float] = field(default_factory=dict)
    counter_ok: bool = True
    max_overlap: int = 1

    def add(self, counter: float | None, power: float | None, time_share: float) -> None:
        s = self.stage
        if counter is not None:
            self.counter[s] = self.counter.get(s, 0.0) + counter
        if power is not None:
            self.power[s] = self.power.get(s, 0.0) + power
        self.time_share[s] = self.time_share.get(s, 0.0) + time_share


class EnergySource(abc.ABC):
    """A cumulative energy counter plus the process-wide ledger that splits it between open windows.

    Subclasses implement :meth:`read`. Share one instance between all meters that measure the same
    hardware (``default_sources()`` does), otherwise overlapping requests double count.
    """

    component: str = "cpu"
    counter_method: str = METHOD_ESTIMATE
    power_method: str | None = None       # method tag when falling back to power x time
    min_counter_window_s: float = 0.0     # shorter windows use power x time (counter too coarse)
    machine_wide: bool = True             # counts other processes too (idle baseline applies)

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[object, _Account] = {}
        self._last: tuple[float, Reading] | None = None

    @abc.abstractmethod
    def read(self) -> Reading:
        """Current cumulative joules (monotonic, wrap-around already handled) and/or watts."""

    def note(self, method: str) -> str:
        """One-line uncertainty note for ``method``."""
        return f"{self.component}: {method}."

    # -- ledger (called by EnergyMeter under this source's lock) ---------------------------------

    def _event(self, key: object, stage: str | None, *, close: bool = False, split: bool = True) -> _Account | None:
        """Read the counter, credit the segment since the last event to open windows, then update ``key``."""
        with self._lock:
            now = self._clock()
            reading = self.read()
            self._attribute(now, reading)
            if close:
                return self._open.pop(key, None)
            account = self._open.get(key)
            if account is None:
                account = self._open[key] = _Account(stage=stage or OTHER_STAGE, split=split)
                k = sum(a.split for a in self._open.values())
                for other in self._open.values():
                    if other.split:
                        other.max_overlap = max(other.max_overlap, k)
            account.stage = stage or OTHER_STAGE
            return account

    def _discard(self, key: object) -> None:
        """Drop a window without reading (after a failed read)."""
        with self._lock:
            self._open.pop(key, None)

    def _probe(self) -> tuple[float, Reading]:
        """Timestamped reading outside any window (idle baseline measurement)."""
        with self._lock:
            return self._clock(), self.read()

    def _attribute(self, now: float, reading: Reading) -> None:
        last, self._last = self._last, (now, reading)
        if last is None or not self._open:
            return
        t0, r0 = last
        dt = max(0.0, now - t0)
        counter: float | None = None
        counter_broken = False
        if r0.joules is not None and reading.joules is not None:
            counter = reading.joules - r0.joules
            if counter < 0:  # counter reset (driver reload): unusable for this segment
                counter, counter_broken = None, True
        elif r0.joules is not None or reading.joules is not None:
            counter_broken = True
        power = None
        if r0.watts is not None and reading.watts is not None:
            power = 0.5 * (r0.watts + reading.watts) * dt
        k = sum(a.split for a in self._open.values())
        for account in self._open.values():
            n = k if account.split else 1   # observers take the whole segment and do not dilute others
            account.add(None if counter is None else counter / n, None if power is None else power / n, dt / n)
            if counter_broken:
                account.counter_ok = False


def _cuda_synchronize() -> None:
    """Wait for queued GPU work so the counter covers it; only if torch is already imported and CUDA is initialised."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    except Exception:  # pragma: no cover - never let accounting break a request
        logger.debug("torch.cuda.synchronize failed", exc_info=True)


class NvmlSource(EnergySource):
    """GPU board energy from NVML: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load, Volta+).

    The counter only advances every few tens of ms, so windows shorter than ``min_counter_window_s``
    (or with a zero/invalid delta) use mean board power (``nvmlDeviceGetPowerUsage``, mW) x time.
    Board-level: includes other processes on the same GPU.
    """

    component = "gpu"
    counter_method = METHOD_NVML_COUNTER
    power_method = METHOD_NVML_POWER
    min_counter_window_s = 0.1

    def __init__(self, nvml: Any, handles: Sequence[Any], *, has_counter: bool = True, has_power: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(clock)
        if not (has_counter or has_power):
            raise ValueError("NVML source needs the energy counter or power readings")
        self._nvml = nvml
        self._handles = list(handles)
        self._has_counter = has_counter
        self._has_power = has_power

    def read(self) -> Reading:
        _cuda_synchronize()
        nvml = self._nvml
        joules = (sum(nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles) / 1000.0
                  if self._has_counter else None)
        watts = sum(nvml.nvmlDeviceGetPowerUsage(h) for h in self._handles) / 1000.0 if self._has_power else None
        return Reading(joules, watts)

    def note(self, method: str) -> str:
        n = len(self._handles)
        if method == METHOD_NVML_COUNTER:
            return f"gpu: NVML board energy counter ({n} GPU(s); whole board, all processes on it)."
        return (f"gpu: window too short for the NVML counter (or counter invalid): mean board power x time "
                f"({n} GPU(s)); coarse.")


class RaplSource(EnergySource):
    """CPU package or DRAM energy from Linux powercap RAPL (``energy_uj``; Intel, and AMD Zen on recent kernels).

    Handles counter wrap-around with ``max_energy_range_uj`` (valid while reads are less than one wrap
    period apart, minutes at typical power). Socket-wide: includes other processes.
    """

    counter_method = METHOD_RAPL

    def __init__(self, component: str, zones: Sequence[Path], *,
                 read_int: Callable[[Path], int] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(clock)
        if not zones:
            raise ValueError("RaplSource needs at least one zone")
        self.component = component
        self._read_int = read_int or _read_int
        self._zones = list(zones)
        self._max_uj = [self._read_int(z / "max_energy_range_uj") for z in self._zones]
        self._raw: list[int | None] = [None] * len(self._zones)
        self._total_uj = [0] * len(self._zones)

    def read(self) -> Reading:
        for i, zone in enumerate(self._zones):
            raw = self._read_int(zone / "energy_uj")
            last = self._raw[i]
            if last is not None:
                delta = raw - last
                if delta < 0:  # wrapped past max_energy_range_uj
                    delta += self._max_uj[i]
                self._total_uj[i] += delta
            self._raw[i] = raw
        return Reading(sum(self._total_uj) / 1e6)

    def note(self, method: str) -> str:
        return f"{self.component}: RAPL counter ({len(self._zones)} zone(s); model-based, whole socket, all processes)."


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


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def _visible_nvml_handles(nvml: Any) -> list[Any]:
    """NVML handles of the GPUs this process may use (CUDA_VISIBLE_DEVICES by index or UUID; all if unset)."""
    count = nvml.nvmlDeviceGetCount()
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return handles
    chosen = []
    for item in (v.strip() for v in visible.split(",")):
        if not item:
            continue
        if item.isdigit():
            if int(item) < count:
                chosen.append(handles[int(item)])
            continue
        for h in handles:
            uuid = nvml.nvmlDeviceGetUUID(h)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            if uuid.startswith(item) or uuid.startswith("GPU-" + item):
                chosen.append(h)
                break
    return chosen


def find_nvml_source(nvml: Any | None = None, *, clock: Callable[[], float] = time.perf_counter) -> NvmlSource | None:
    """An NVML source for the visible GPUs, or None (no pynvml, no driver, no GPU, or nothing readable)."""
    if nvml is None:
        try:
            import pynvml as nvml  # nvidia-ml-py
        except ImportError:
            logger.info("pynvml not installed: no GPU energy")
            return None
    error: type[BaseException] = getattr(nvml, "NVMLError", Exception)
    try:
        nvml.nvmlInit()
        handles = _visible_nvml_handles(nvml)
    except error as exc:
        logger.info("NVML unavailable (%s): no GPU energy", exc)
        return None
    if not handles:
        return None
    has_counter = has_power = True
    for h in handles:
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(h)
        except error:
            has_counter = False
        try:
            nvml.nvmlDeviceGetPowerUsage(h)
        except error:
            has_power = False
    if not (has_counter or has_power):
        logger.info("NVML has neither energy counter nor power readings on these GPUs")
        return None
    return NvmlSource(nvml, handles, has_counter=has_counter, has_power=has_power, clock=clock)


def find_rapl_sources(root: Path = POWERCAP_ROOT, *, read_int: Callable[[Path], int] | None = None,
                      clock: Callable[[], float] = time.perf_counter) -> list[RaplSource]:
    """Readable RAPL zones under ``root``: one ``cpu_package`` source (all packages) and one ``dram`` source.

    ``core``/``uncore`` (inside the package) and ``psys`` (overlaps) are skipped. Since the
    CVE-2020-8694 fix ``energy_uj`` is root-only on most kernels: PermissionError means no RAPL.
    """
    read_int = read_int or _read_int
    zones: dict[str, list[Path]] = {"cpu_package": [], "dram": []}
    try:
        candidates = sorted(root.glob("*-rapl:*"))
    except OSError:
        return []
    for zone in candidates:
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            continue
        component = "cpu_package" if name.startswith("package") else "dram" if name == "dram" else None
        if component is None:
            continue
        try:
            read_int(zone / "energy_uj")
            read_int(zone / "max_energy_range_uj")
        except PermissionError:
            logger.info("RAPL %s not readable (root-only since CVE-2020-8694): falling back", zone)
            continue
        except (OSError, ValueError) as exc:
            logger.info("RAPL %s unusable (%s)", zone, exc)
            continue
        zones[component].append(zone)
    return [RaplSource(c, z, read_int=read_int, clock=clock) for c, z in zones.items() if z]


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


class EnergyMeter:
    """Measures one request (single use): ``with meter:`` or ``start()``/``stop()``; stages via ``meter.stage(name)``.

    ``sources`` defaults to the shared :func:`default_sources`. ``split=False`` makes an observer
    window: it takes the whole counter delta over its span and does not reduce the share of other
    windows; use it for an outer total around metered parts (e.g. a training run around per-fold
    meters), which would otherwise count as an overlapping request. ``baseline_watts`` (component -> idle W,
    e.g. from :func:`measure_idle_baseline`) is subtracted from machine-wide counters as
    baseline x this window's share of time, per stage, floored at 0. Accounting failures are logged,
    never raised into the request.
    """

    def __init__(self, sources: Sequence[EnergySource] | None = None, *,
                 grid_intensity_g_per_kwh: float | None = None,
                 baseline_watts: Mapping[str, float] | None = None,
                 split: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._split = split
        self._sources = tuple(default_sources() if sources is None else sources)
        self._grid = resolve_grid_intensity(grid_intensity_g_per_kwh)
        self._baseline = {k: float(v) for k, v in (baseline_watts or {}).items()}
        for k, v in self._baseline.items():
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"baseline_watts[{k!r}] must be >= 0, got {v!r}")
        self._clock = clock
        self._key = object()
        self._state = "new"
        self._failed: list[EnergySource] = []
        self._t_start = 0.0
        self._duration = 0.0
        self._stage: str | None = None
        self._stage_t0 = 0.0
        self._stage_time: dict[str, float] = {}
        self._record: EnergyRecord | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> EnergyMeter:
        """Open the window on every source."""
        if self._state != "new":
            raise RuntimeError("EnergyMeter is single-use; create one per request")
        self._state = "running"
        self._t_start = self._clock()
        self._stage_t0 = self._t_start
        self._broadcast(OTHER_STAGE)
        return self

    def stop(self) -> EnergyRecord:
        """Close the window (and any open stage) and build the record."""
        if self._state != "running":
            raise RuntimeError("EnergyMeter.stop() without start()")
        accounts: list[tuple[EnergySource, _Account]] = []
        for src in self._live_sources():
            try:
                account = src._event(self._key, None, close=True)
            except Exception as exc:
                self._fail(src, exc)
                continue
            if account is not None:
                accounts.append((src, account))
        now = self._clock()
        self._close_stage_time(now)
        self._duration = max(0.0, now - self._t_start)
        self._state = "stopped"
        self._record = self._build(accounts)
        return self._record

    def __enter__(self) -> EnergyMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._state == "running":
            self.stop()

    @property
    def record(self) -> EnergyRecord:
        """The finished record (after ``stop()`` / the ``with`` block)."""
        if self._record is None:
            raise RuntimeError("EnergyMeter.record is available after stop()")
        return self._record

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Credit energy and time inside the block to stage ``name`` (stages do not nest; re-entry accumulates)."""
        if self._state != "running":
            raise RuntimeError("EnergyMeter.stage() outside a running meter")
        if self._stage is not None:
            raise RuntimeError(f"stage {name!r} inside stage {self._stage!r}: stages do not nest")
        if not name or name == OTHER_STAGE:
            raise ValueError(f"invalid stage name {name!r}")
        self._close_stage_time(self._clock())
        self._stage = name
        self._stage_time.setdefault(name, 0.0)
        self._broadcast(name)
        try:
            yield
        finally:
            if self._state == "running":
                self._close_stage_time(self._clock())
                self._stage = None
                self._broadcast(OTHER_STAGE)

    # -- internals ------------------------------------------------------------------------------

    def _close_stage_time(self, now: float) -> None:
        key = self._stage or OTHER_STAGE
        self._stage_time[key] = self._stage_time.get(key, 0.0) + max(0.0, now - self._stage_t0)
        self._stage_t0 = now

    def _live_sources(self) -> list[EnergySource]:
        return [s for s in self._sources if s not in self._failed]

    def _broadcast(self, stage: str) -> None:
        for src in self._live_sources():
            try:
                src._event(self._key, stage, split=self._split)
            except Exception as exc:
                self._fail(src, exc)

    def _fail(self, src: EnergySource, exc: BaseException) -> None:
        logger.warning("energy source %s (%s) failed, dropped for this request: %s",
                       src.component, src.counter_method, exc)
        self._failed.append(src)
        try:
            src._discard(self._key)
        except Exception:  # pragma: no cover
            pass

    def _choose(self, src: EnergySource, acct: _Account) -> tuple[str, dict[str, float]]:
        """Counter if valid, long enough and non-zero; else power x time if available; else the counter."""
        has_counter = bool(acct.counter) and acct.counter_ok
        counter_total = math.fsum(acct.counter.values()) if has_counter else 0.0
        if has_counter and self._duration >= src.min_counter_window_s and counter_total > 0:
            return src.counter_method, dict(acct.counter)
        if acct.power and src.power_method is not None:
            return src.power_method, dict(acct.power)
        return src.counter_method, dict(acct.counter) if has_counter else {}

    def _build(self, accounts: list[tuple[EnergySource, _Account]]) -> EnergyRecord:
        per_comp_stage: dict[str, dict[str, float]] = {}
        comp_methods: dict[str, list[str]] = {}
        notes: list[str] = []
        baseline_notes: list[str] = []
        overlap = 1
        for src, acct in accounts:
            method, gross = self._choose(src, acct)
            base_w = self._baseline.get(src.component, 0.0) if src.machine_wide else 0.0
            cells = per_comp_stage.setdefault(src.component, {})
            for stage in set(gross) | set(acct.time_share):
                net = gross.get(stage, 0.0) - base_w * acct.time_share.get(stage, 0.0)
                cells[stage] = cells.get(stage, 0.0) + max(0.0, net)
            comp_methods.setdefault(src.component, []).append(method)
            notes.append(src.note(method))
            if src.machine_wide:
                baseline_notes.append(f"{src.component} idle baseline {base_w:g} W subtracted" if base_w
                                      else f"{src.component} includes idle power (no baseline given)")
            overlap = max(overlap, acct.max_overlap)
        for src in self._failed:
            notes.append(f"{src.component}: reading failed, not counted.")

        components = {c: ComponentEnergy(math.fsum(cells.values()), "+".join(dict.fromkeys(comp_methods[c])))
                      for c, cells in per_comp_stage.items()}
        total = math.fsum(v for cells in per_comp_stage.values() for v in cells.values())

        stages: dict[str, StageEnergy] = {}
        named = [s for s in self._stage_time if s != OTHER_STAGE]
        if named:
            for s in named + [OTHER_STAGE]:
                j = math.fsum(cells.get(s, 0.0) for cells in per_comp_stage.values())
                d = self._stage_time.get(s, 0.0)
                if s != OTHER_STAGE or j > 0 or d > 0:
                    stages[s] = StageEnergy(j, d)

        methods = list(dict.fromkeys(m for c in components.values() for m in c.method.split("+")))
        if baseline_notes:
            notes.append("; ".join(baseline_notes) + ".")
        if not self._split:
            notes.append("Observer window: whole counter delta, including overlapping/nested metered work.")
        elif overlap > 1:
            notes.append(f"Machine-wide counters split equally with up to {overlap - 1} overlapping request(s).")
        notes.append(_EXCLUSIONS_NOTE)
        return EnergyRecord(
            joules=total,
            duration_s=self._duration,
            components=components,
            stages=stages,
            method="+".join(methods) if methods else "none",
            uncertainty=" ".join(notes),
            grid_intensity_g_per_kwh=self._grid,
        )
