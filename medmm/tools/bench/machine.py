"""What the numbers were measured on: CPU, threads, versions, device, and whether other work shared the machine."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

_THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "MALLOC_ARENA_MAX",
               "MEDMM_TORCH_THREADS")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers were measured on; the load average tells a quiet machine from a shared one."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        affinity = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "loadavg_1m_start": round(load[0], 2),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "env": {k: os.environ[k] for k in _THREAD_ENV if k in os.environ},
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def contention(result: dict[str, Any], notes_out: list[str]) -> None:
    """Was the machine shared while the bench ran? (load average against usable CPUs, start and end)"""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    result["machine"]["loadavg_1m_end"] = round(load[0], 2)
    busy = max(result["machine"]["loadavg_1m_start"], load[0])
    cores = result["machine"]["cpus_usable"] or 1
    result["machine"]["contended"] = bool(busy > 1.25 * cores)  # this bench alone keeps load near cores
    if result["machine"]["contended"]:
        notes_out.append(f"load average {busy:.1f} on {cores} CPUs: other work shared the machine; figures are "
                         "measured under contention")
