#!/usr/bin/env python
"""Compare medmm.energy.EnergyMeter with CodeCarbon's OfflineEmissionsTracker on one CPU workload.

Why: a sanity check of our per-request figure against a widely used tool. Both wrap the SAME run
(the meter nested inside the tracker), so the workload is identical. Prints one JSON object.

    .venv/bin/pip install -r requirements-dev.txt    # codecarbon (bench only, not a runtime dependency)
    .venv/bin/python scripts/bench_energy.py --seconds 20

No network: OfflineEmissionsTracker with a fixed country code, nothing saved (output_methods=[]), and every socket
connect / DNS lookup in this process is blocked and reported under "network_attempts".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import time
from typing import Any

_ATTEMPTS: list[str] = []


def block_network() -> None:
    """Refuse (and record) every IP connection and DNS lookup made by this process."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _ATTEMPTS.append(f"connect {address!r}")
            raise OSError("network blocked by bench_energy.py")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        _ATTEMPTS.append(f"getaddrinfo {host!r}")
        raise socket.gaierror("network blocked by bench_energy.py")

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


def workload(seconds: float, size: int) -> int:
    """Repeated float32 matmul on CPU for ``seconds``; returns the iteration count."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ b)
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", type=int, default=512, help="matrix side")
    ap.add_argument("--country", default="USA", help="ISO-3 country for CodeCarbon (no lookup)")
    ap.add_argument("--cc-tracking-mode", default="process", choices=["process", "machine"])
    args = ap.parse_args()

    block_network()
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    import torch
    from codecarbon import OfflineEmissionsTracker

    from medmm.energy import EnergyMeter, default_sources

    workload(0.5, args.size)  # warm up BLAS / thread pool
    sources = default_sources()
    tracker = OfflineEmissionsTracker(
        country_iso_code=args.country,
        measure_power_secs=1,
        log_level="error",
        output_methods=[],  # nothing saved (= save_to_file=False, deprecated in CodeCarbon 3)
        tracking_mode=args.cc_tracking_mode,
        allow_multiple_runs=True,
        project_name="medmm-bench-energy",
    )
    tracker.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    with EnergyMeter() as meter:
        with meter.stage("inference"):
            iterations = workload(args.seconds, args.size)
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - t0
    tracker.stop()
    cc = tracker.final_emissions_data
    kwh_to_j = 3.6e6
    cc_total_j = cc.energy_consumed * kwh_to_j
    cc_cpu_j = cc.cpu_energy * kwh_to_j
    ours = meter.record
    out = {
        "workload": {"seconds": args.seconds, "matrix": args.size, "iterations": iterations,
                     "torch_threads": torch.get_num_threads(), "wall_s": wall_s, "process_cpu_s": cpu_s},
        "medmm": {"joules": ours.joules, "method": ours.method,
                  "components": {k: c.joules for k, c in ours.components.items()},
                  "sources": [f"{s.component}:{s.counter_method}" for s in sources]},
        "codecarbon": {"version": cc.codecarbon_version, "tracking_mode": cc.tracking_mode,
                       "cpu_model": cc.cpu_model, "cpu_count": cc.cpu_count,
                       "cpu_power_w": cc.cpu_power, "ram_power_w": cc.ram_power,
                       "joules": cc_total_j, "cpu_joules": cc_cpu_j,
                       "gpu_joules": cc.gpu_energy * kwh_to_j, "ram_joules": cc.ram_energy * kwh_to_j,
                       "duration_s": cc.duration},
        "ratio_medmm_over_codecarbon": ours.joules / cc_total_j if cc_total_j else None,
        "ratio_medmm_over_codecarbon_cpu": ours.joules / cc_cpu_j if cc_cpu_j else None,
        "network_attempts": _ATTEMPTS,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
