"""The source interface: a cumulative energy counter (``EnergySource.read``) and the ledger that splits it.

Every source is shared process-wide and keeps a ledger of the meter windows open on it: at every window event
(start, stage change, stop) the counter is read and the energy since the previous event is split equally among
the windows open during that segment, credited to each window's current stage (docs/energy.md).
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

OTHER_STAGE = "other"

# how a component's joules were obtained (EnergyRecord.method, ComponentEnergy.method)
METHOD_NVML_COUNTER = "nvml-counter"
METHOD_NVML_POWER = "nvml-power-x-time"
METHOD_RAPL = "rapl"
METHOD_ESTIMATE = "estimate-cpu-time"


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
