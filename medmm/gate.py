"""The input gate: is each scan a chest radiograph, and is it a frontal or a lateral view? Decided from the pixels.

What
----
``InputGate.check(encoder, pixels)`` -> one ``ViewCheck`` per scan: the probability that the scan is a chest
radiograph and, if it is, that it is a lateral view (``decide(features)`` from features a cached graph computed, on
the torch-free path). ``load_gate(folder)`` reads the checkpoint's ``gate.json``
(written by ``scripts/input_gate.py``, which also measures the refusal rates it states).

Why these features
------------------
The gate reads the output of the image encoder's *frozen* first stages (ImageNet weights, never fine-tuned):
their 4 x 4 average-pooled map (where bright and dark structures are: the layout of a thorax) and each channel's mean
and spread (texture). The fine-tuned embedding was tried first and rejected: it separates the training *sources*,
so a classifier on it refused 40 % of the films of a source left out of its training (Kermany) -- new hospitals'
films would be refused. On the frozen features, a source left out is refused at <= 1 % (docs/input_gate.md).
One multinomial logistic regression (standardised features; frontal chest film, lateral chest film, not a chest
radiograph; classes weighted equally, so the few lateral films count as much as the many frontal ones), small
enough to ship as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GATE_FILE = "gate.json"


CLASSES = ("frontal chest radiograph", "lateral chest radiograph", "not a chest radiograph")


@dataclass(frozen=True)
class LinearProbe:
    """Standardise, then multinomial logistic regression: ``softmax(((x - mean) / scale) @ coef.T + intercept)``
    over ``CLASSES``."""

    mean: np.ndarray         # [D]
    scale: np.ndarray        # [D]
    coef: np.ndarray         # [K, D]
    intercept: np.ndarray    # [K]

    def prob(self, x: np.ndarray) -> np.ndarray:
        """``[N, D]`` -> ``[N, K]`` class probabilities."""
        z = ((np.atleast_2d(x) - self.mean) / self.scale) @ self.coef.T + self.intercept
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        return {k: np.asarray(getattr(self, k)).tolist() for k in ("mean", "scale", "coef", "intercept")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LinearProbe":
        return cls(*(np.asarray(d[k], np.float64) for k in ("mean", "scale", "coef", "intercept")))


def feature_stats(x, grid: int, map_size: tuple[int, int] | None = None):
    """The gate's features of a feature map ``[N, C, h, w]`` (torch): its ``grid`` x ``grid`` average-pooled map,
    then each channel's mean and (unbiased) standard deviation -> ``[N, C * grid * grid + 2 C]`` float32.

    ``map_size``: ``(h, w)`` known ahead, for the ONNX export (``medmm.runtime.export.GateGraph``), which cannot
    export an adaptive pooling of a map whose size the tracer lost: the same bins as a fixed average pooling."""
    import torch
    import torch.nn.functional as F

    x = x.float()
    if map_size is not None and map_size[0] % grid == 0 and map_size[1] % grid == 0:
        pooled = F.avg_pool2d(x, (map_size[0] // grid, map_size[1] // grid)).flatten(1)
    else:
        pooled = F.adaptive_avg_pool2d(x, grid).flatten(1)
    stats = torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)
    return torch.cat([pooled, stats], 1)


@dataclass(frozen=True)
class ViewCheck:
    """What the gate saw in one scan."""

    p_chest: float      # P(frontal) + P(lateral chest radiograph)
    p_lateral: float    # P(lateral | chest radiograph)
    chest: bool
    lateral: bool


@dataclass
class InputGate:
    stages: int                     # the encoder's first ``stages`` stages (frozen in training) give the features
    grid: int                       # their output average-pooled to grid x grid
    probe: LinearProbe              # P(frontal chest), P(lateral chest), P(not a chest radiograph)
    chest_threshold: float = 0.5    # refuse when P(frontal) + P(lateral) is below
    figures: dict[str, Any] = field(default_factory=dict)   # the measured rates (scripts/input_gate.py)

    def features(self, encoder, pixels) -> np.ndarray:
        """``[N, 3, S, S]`` model-input pixels -> ``[N, D]`` features (torch, no gradients). The torch-free path
        runs the same computation as a graph (``medmm.runtime.export.GateGraph``)."""
        import torch

        with torch.inference_mode():
            x = pixels.contiguous(memory_format=torch.channels_last)
            for _, stage in encoder.stages[: self.stages]:
                x = stage(x)
            return feature_stats(x, self.grid).cpu().numpy().astype(np.float64)

    def check(self, encoder, pixels) -> list[ViewCheck]:
        """One ``ViewCheck`` per scan, from the pixels through the torch ``encoder``'s first stages."""
        return self.decide(self.features(encoder, pixels))

    def decide(self, features: np.ndarray) -> list[ViewCheck]:
        """One ``ViewCheck`` per row of ``features`` (``features``' output): a chest film when P(frontal) +
        P(lateral) >= ``chest_threshold``; lateral when, given that, P(lateral) exceeds P(frontal)."""
        p = self.probe.prob(np.asarray(features, np.float64))
        out = []
        for frontal, lateral, _ in p:
            chest = frontal + lateral
            p_lat = lateral / max(chest, 1e-12)
            out.append(ViewCheck(float(chest), float(p_lat), bool(chest >= self.chest_threshold), bool(p_lat > 0.5)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"stages": self.stages, "grid": self.grid, "classes": list(CLASSES),
                "chest_threshold": self.chest_threshold, "figures": self.figures, "probe": self.probe.to_dict()}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / GATE_FILE
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n", encoding="utf-8")
        return path


def screen(checks: list[ViewCheck], header_views: list[str | None],
           warnings: list[str]) -> tuple[str | None, list[dict], list[int]]:
    """What the gate's checks mean for one request: (refusal or None, per-scan results for the answer, indices of the
    scans to analyse). Any scan that is not a chest film refuses the request; lateral views (by the pixels, or a
    header view other than AP/PA) are set aside with a warning (appended to ``warnings``), and a request of lateral
    views only is refused."""
    from medmm import caveats

    n = len(checks)
    results = [{"scan": i + 1, "p_chest_radiograph": round(c.p_chest, 4), "chest_radiograph": c.chest,
                "p_lateral": round(c.p_lateral, 4) if c.chest else None, "lateral": c.lateral and c.chest,
                "set_aside": False} for i, c in enumerate(checks)]
    refused = [i for i, c in enumerate(checks) if not c.chest]
    if refused:
        return caveats.not_chest_refusal([(caveats.scan_name(i, n), checks[i].p_chest) for i in refused]), \
            results, []
    header_lateral = [v is not None and v not in ("AP", "PA") for v in header_views]
    lateral = [i for i, c in enumerate(checks) if c.lateral or header_lateral[i]]
    how = {i: caveats.lateral_how(checks[i].lateral, checks[i].p_lateral, header_views[i]) for i in lateral}
    for i in lateral:
        results[i]["set_aside"] = True
    if len(lateral) == n:
        return caveats.lateral_refusal([(caveats.scan_name(i, n), how[i]) for i in lateral]), results, []
    for i in lateral:
        warnings.append(caveats.lateral_set_aside(caveats.scan_name(i, n), how[i]))
    return None, results, [i for i in range(n) if i not in lateral]


def load_gate(folder: str | Path) -> InputGate | None:
    """The checkpoint's input gate, or None when it has none (every scan is then taken as a frontal chest film)."""
    path = Path(folder) / GATE_FILE
    if not path.is_file():
        return None
    d = json.loads(path.read_text(encoding="utf-8"))
    if tuple(d.get("classes", ())) != CLASSES:
        raise ValueError(f"{path}: the gate's classes {d.get('classes')} are not {CLASSES}")
    return InputGate(int(d["stages"]), int(d["grid"]), LinearProbe.from_dict(d["probe"]), float(d["chest_threshold"]),
                     dict(d.get("figures") or {}))


__all__ = ["CLASSES", "GATE_FILE", "InputGate", "LinearProbe", "ViewCheck", "feature_stats", "load_gate", "screen"]
