"""One manifest row -> one output row: the single definition used by ``predict --manifest`` (one process) and by
``predict --manifest --engine ray`` (Ray Data actors), so both write the same columns, warnings and errors.

``status``: ``ok``, ``refused`` (the input gate: not a chest radiograph, or lateral views only; no probabilities, the
reason is the row's warning) or ``error`` (the ``error`` column says why). ``population``: the scope table's row the
calls used. ``warnings``: the row's warnings (refusal / scope / out-of-distribution / internal consistency),
``" | "``-separated. Probabilities are written with 6 decimals.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

SCORING_THREADS = 1     # intra-op threads per row scorer, in both engines


def pin_scoring_threads() -> None:
    """Score rows with :data:`SCORING_THREADS` intra-op thread(s), in this process and in each Ray actor, before and
    after the pipeline loads. Float reductions depend on the thread count (up to 5e-7 here between 1 and 2 torch
    threads), which is inside 1e-6 but flips the 6th decimal the output writes: with the machine's default in one
    engine and one thread per actor in the other, 404 of 2,015 rows differed (docs/scale.md). Parallelism comes from
    rows (``--workers``), and the file no longer depends on the machine's core count. ``OMP_NUM_THREADS`` is what
    torch reads when it loads and what the ONNX Runtime / OpenVINO sessions follow without torch
    (``medmm.runtime.sessions.default_threads``); no torch import here (the torch-free path)."""
    os.environ["OMP_NUM_THREADS"] = str(SCORING_THREADS)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != SCORING_THREADS:
        torch.set_num_threads(SCORING_THREADS)


def output_fields(findings: Sequence[str]) -> list[str]:
    """The output CSV's columns, in order."""
    return ["image", "status", *findings, "positive", "population", "warnings", "error"]


def image_path(image: str, manifest_dir: Path) -> Path:
    """A manifest's ``image`` cell as a path: absolute as given, else relative to the manifest's folder."""
    return Path(image) if not image or Path(image).is_absolute() else manifest_dir / image


def score_row(pipeline: Any, row: Mapping[str, Any], manifest_dir: Path) -> dict[str, str]:
    """Predict one manifest row; a bad row's reason goes into its ``error`` column (one line), never raised."""
    from medmm.io import ScanError
    from medmm.pipeline import InputError
    from medmm.report import consistency_warnings

    image = (row.get("image") or "").strip()
    out = {"image": image, "status": "error", "positive": "", "population": "", "warnings": "", "error": ""}
    try:
        path = image_path(image, manifest_dir)
        pred = pipeline.predict([path] if image else [], (row.get("notes") or "").strip() or None)
        out["status"], out["population"] = pred.status, pred.population or ""
        out.update({k: f"{v:.6f}" for k, v in pred.findings.items()})   # none when refused
        out["positive"] = ";".join(pred.positive)
        warnings = dict.fromkeys([*pred.warnings, *consistency_warnings(pred)])
        out["warnings"] = " | ".join(" ".join(w.split()) for w in warnings if w)
    except (ScanError, InputError, OSError) as e:
        out["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    return out
