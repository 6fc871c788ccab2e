"""The service path the CLI and the app run (load + inference + report, metered): its time and energy per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medmm.tools.bench.inputs import TYPICAL_NOTES
from medmm.tools.bench.timing import time_fn


def service_stage(pipe: Any, files: dict[str, Path], repeats: int, stages: dict, result: dict[str, Any],
                  notes_out: list[str]) -> None:
    """The service path the CLI and the app run (load + inference + report, metered) and its energy."""
    try:
        from medmm.service import run_request

        joules: list[float] = []

        def service_call() -> None:
            r = run_request(pipe, [files["png"]], TYPICAL_NOTES)
            joules.append(float(r.energy.to_dict().get("joules") or 0.0))

        stages["service_request.png+notes+report"] = time_fn(service_call, repeats)
        result["energy_per_service_request_j"] = round(float(np.median(joules)), 4) if joules else None
    except Exception as e:  # noqa: BLE001 - another team's stage must not sink the whole bench
        notes_out.append(f"service_request skipped: {type(e).__name__}: {e}")
