"""GPU board energy from NVML (``nvmlDeviceGetTotalEnergyConsumption``, else board power x time)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from medmm.energy.source import METHOD_NVML_COUNTER, METHOD_NVML_POWER, EnergySource, Reading

logger = logging.getLogger(__name__)


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
