"""Training and evaluation (side scripts, not used by the app at run time).

* ``data``: training sources and records, the shared data folder (``SHARED_DATA``), patient-grouped folds,
  leave-one-source-out splits.
* ``losses``: partial-label NLL over the output states, CLIP-style alignment loss.
* ``metrics``: AUC, thresholds, calibration (temperature fitting, ECE), bootstrap metrics; numpy only.
* ``train``: the training script (``python -m medmm.train``, an entry module for this one); ``main`` reads top to
  bottom through one module per step:
  ``cli`` (options -> frozen ``RunConfig``), ``cache`` (frozen image / notes features), ``batches`` (batches from the
  caches, the trainable forward), ``loop`` (the training loop, predictions), ``run`` (what every fit of a run shares,
  the final fit), ``crossval`` (k-fold CV, leave-one-source-out), ``calibration`` (temperature, thresholds, the notes
  expert's weight, the adult-scope check), ``heldout_metrics`` (metrics tables of held-out predictions), ``outputs``
  (checkpoint, metrics.json, the printed summary).
* ``evaluate``: a checkpoint evaluated on a labelled manifest (``python -m medmm evaluate``).

Names are re-exported lazily, so importing the package (or ``data`` / ``metrics``) does not import torch.
"""

from medmm._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("IMAGE_SOURCES", "SHARED_DATA", "Record", "covid_records", "iu_records", "kermany_records",
                     "label_matrix", "leave_one_source_out", "load_records", "manifest_records", "nih_records",
                     "patient_folds"), "data"),
    **dict.fromkeys(("partial_label_nll",), "losses"),
    **dict.fromkeys(("binary_metrics", "confusion_at", "expected_calibration_error", "fit_state_temperature",
                     "fit_temperature", "reliability_curve", "roc_auc", "sensitivity_threshold",
                     "specificity_threshold", "youden_threshold"), "metrics"),
    **dict.fromkeys(("evaluate_manifest",), "evaluate"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
