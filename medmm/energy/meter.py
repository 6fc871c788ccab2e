"""Per-request accounting: ``EnergyMeter`` opens a window on every source and builds the ``EnergyRecord``."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from medmm.energy.carbon import resolve_grid_intensity
from medmm.energy.detect import default_sources
from medmm.energy.record import ComponentEnergy, EnergyRecord, StageEnergy
from medmm.energy.source import OTHER_STAGE, EnergySource, _Account

logger = logging.getLogger(__name__)

_EXCLUSIONS_NOTE = "Excludes PSU losses, cooling (PUE), network and storage."


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
