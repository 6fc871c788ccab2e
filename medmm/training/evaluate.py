"""``python -m medmm evaluate --manifest FILE.csv``: metrics of a checkpoint on any labelled manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmm.training.data import manifest_records
from medmm.io import ScanError
from medmm.training.metrics import binary_metrics, expected_calibration_error
from medmm.pipeline import InputError, Pipeline


def evaluate_manifest(pipe: Pipeline, manifest: str | Path, n_boot: int = 1000) -> dict:
    """Predict every row, then per finding: AUC, sensitivity, specificity, F1 at the stored threshold, with
    patient-bootstrap 95% CIs and ECE. Rows that fail to load are counted and listed, not silently dropped."""
    records = manifest_records(manifest)
    probs, labels, groups, errors = [], [], [], []
    for i, r in enumerate(records):
        try:
            pred = pipe.predict([r.image] if r.image else [], r.notes)
        except (ScanError, InputError, OSError) as e:
            errors.append({"row": i, "error": str(e)})
            continue
        probs.append([pred.findings[f] for f in pipe.findings])
        labels.append(r.labels)
        groups.append(r.patient_id)
    result: dict = {"manifest": str(manifest), "rows": len(records), "evaluated": len(probs), "errors": errors,
                    "checkpoint": pipe.meta.name, "findings": {}}
    if not probs:
        return result
    p, y, g = np.array(probs), np.array(labels), np.array(groups)
    for j, f in enumerate(pipe.findings):
        known = ~np.isnan(y[:, j])
        if known.sum() < 2 or len(np.unique(y[known, j])) < 2:
            result["findings"][f] = None  # needs both classes
            continue
        m = binary_metrics(y[known, j], p[known, j], pipe.meta.thresholds[f], groups=g[known], n_boot=n_boot)
        m["ece"] = expected_calibration_error(y[known, j], p[known, j])
        result["findings"][f] = m
    return result
