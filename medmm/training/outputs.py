"""What a training run writes: the checkpoint (with the summary of the run and its headline metrics),
``OUT/metrics.json``, the per-rank fingerprint ``OUT/rank{N}.json``, and the few lines printed at the end."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from medmm.labels import FINDINGS
from medmm.models.checkpoint import CheckpointMeta, OODReference, ScopeCheck, save_checkpoint
from medmm.models.model import MedMM
from medmm.training.cli import recipe_config
from medmm.training.crossval import CrossValidation
from medmm.training.heldout_metrics import short_aucs
from medmm.training.run import Run


def run_summary(run: Run, argv: list[str] | None, energy_total: dict, cv: CrossValidation, duration_s: float) -> dict:
    """``training`` of the checkpoint and of metrics.json: data, settings, command, energy, duration, operating point."""
    return {
        "records": {str(s): int(sum(r.source == s for r in run.records)) for s in sorted(set(run.sources))},
        "patients": len({r.patient_id for r in run.records}),
        "config": recipe_config(run.config),
        "command": "python -m medmm.train " + " ".join(argv if argv is not None else sys.argv[1:]),
        "energy": {"total": energy_total, "folds": cv.energy},
        "duration_s": round(duration_s, 1), "state_temperature": cv.temperature, "threshold_rules": cv.rules,
    }


def save_final_checkpoint(run: Run, final: MedMM, ood: OODReference | None, scope: ScopeCheck | None,
                          cv: CrossValidation, summary: dict) -> Path:
    """The shipped checkpoint: weights, the cross-validated thresholds, the run's summary and headline metrics."""
    if scope is not None:
        scope.adult_auc = adult_auc(cv.metrics)
    meta = CheckpointMeta(model=run.model_cfg, preprocessing=run.prep, findings=FINDINGS,
                          temperatures={f: 1.0 for f in FINDINGS}, thresholds=cv.thresholds, trained=True,
                          name=run.out.name, operating_point="; ".join(f"{f}: {r}" for f, r in cv.rules.items()),
                          training=summary, metrics=headline(cv.metrics),
                          notes_expert=None if final.notes_expert is None else final.notes_expert.to_dict())
    return save_checkpoint(run.out / "checkpoint", final, meta, ood, scope)


def adult_auc(metrics: dict) -> dict | None:
    """The figure the adult-scope warning quotes: normal-vs-abnormal AUC on NIH films that span the archive."""
    blk = ((metrics.get("sources") or {}).get("nih_sample") or {}).get("abnormal_vs_normal")
    if not blk:
        return None
    return {"auc": blk["auc"]["value"], "ci95": blk["auc"]["ci95"], "n": blk["n"],
            "population": "unseen NIH ChestX-ray14 patients (out-of-fold), normal vs any of 14 findings"}


def headline(metrics: dict) -> dict:
    """The few numbers worth carrying inside the checkpoint JSON."""
    out = {}
    for name, res in (metrics.get("findings") or {}).items():
        if res:
            out[name] = {k: res[k] for k in ("auc", "sensitivity", "specificity", "f1", "ece", "n")}
    for name, res in (metrics.get("subsets") or {}).items():
        if res:
            out[name] = {k: res[k] for k in ("auc", "sensitivity", "specificity", "f1", "n", "rate") if k in res}
    return out


def write_metrics(out: Path, metrics: dict, summary: dict) -> None:
    (out / "metrics.json").write_text(json.dumps({"metrics": metrics, "training": summary}, indent=2, default=float))


def write_rank_summary(out: Path, rank: int, model: MedMM, metrics: dict) -> None:
    """Per-rank fingerprint of the result (final weights + metrics), so distributed runs can show agreement."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if not k.startswith("text_encoder."):
            h.update(k.encode())
            h.update(v.detach().float().cpu().numpy().round(5).tobytes())
    summary = {"rank": rank, "weights_sha256": h.hexdigest(),
               "pneumonia_auc": ((metrics.get("findings") or {}).get("Pneumonia") or {}).get("auc")}
    (out / f"rank{rank}.json").write_text(json.dumps(summary, indent=2, default=float))


def print_summary(metrics: dict, summary: dict) -> None:
    """A few lines a person reads at the end of a run (the full tables are in metrics.json)."""
    lines = [f"trained on {summary['records']} in {summary['duration_s']:.0f} s"]
    for name, blk in (metrics.get("findings") or {}).items():
        if blk:
            lines.append(f"  {name:<20} AUC {blk['auc']['value']:.3f}  sens {blk['sensitivity']['value']:.3f}  "
                         f"spec {blk['specificity']['value']:.3f}  (out-of-fold, n={blk['n']})")
    for source, res in (metrics.get("leave_one_source_out") or {}).items():
        lines.append(f"  left out {source}: {short_aucs(res)}")
    print("\n".join(lines))
