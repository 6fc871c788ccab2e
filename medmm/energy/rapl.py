"""CPU package and DRAM energy from Linux powercap RAPL counters (``/sys/class/powercap``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from medmm.energy.source import METHOD_RAPL, EnergySource, Reading

logger = logging.getLogger(__name__)

POWERCAP_ROOT = Path("/sys/class/powercap")


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


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


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
