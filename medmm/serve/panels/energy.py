"""The energy panel: joules, watt-hours and CO2e of one request, per stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _num(x: float) -> str:
    return f"{x:.3g}" if x else "0"


COLD_START = ("First analysis after the app started: the model was still loading while it ran, and that work is "
              "in these figures (energy and latency); the next analyses cost less.")


def energy_markdown(energy: Mapping[str, Any], latency_s: float | None = None, cold: bool = False) -> str:
    """Energy panel: total J / Wh / gCO2e, method and uncertainty, and a per-stage table; with ``cold``, a line
    saying the model's loading is counted in this request."""
    head = (f"**{_num(energy['joules'])} J** = {_num(energy['wh'])} Wh ≈ **{_num(energy['gco2e'])} g CO2e** "
            f"(grid {energy.get('grid_intensity_g_per_kwh', 0):g} gCO2e/kWh)")
    if latency_s is not None:
        head += f" · latency {latency_s:.2f} s"
    lines = [head, "", f"Method: `{energy['method']}`. {energy.get('uncertainty', '')}".rstrip()]
    if cold:
        lines += ["", f"*{COLD_START}*"]
    stages = energy.get("stages") or {}
    if stages:
        lines += ["", "| Stage | Energy (J) | Time (s) |", "|---|---:|---:|"]
        lines += [f"| {name} | {_num(s['joules'])} | {s['duration_s']:.2f} |" for name, s in stages.items()]
    return "\n".join(lines)
