"""Side training script: ``python -m medmm.train [--out DIR] [--folds 5] ...``.

Reads top to bottom (``main``), one module per step:
1. ``cli``: the options, as frozen configs; ``data``: records from the shared sources (and/or a manifest),
   relabelled onto FINDINGS with nan = unknown;
2. ``cache``: what is frozen, computed once: the image encoder's early layers (one clean + ``--aug-views``
   augmented views per image) and the notes embeddings — this is what makes CV feasible on 2 CPU cores;
   ``batches``: training batches from the caches; ``run``: what every fit of the run shares;
3. ``crossval``: patient-grouped, label-stratified k-fold CV, each fold trained by ``loop`` (the image encoder's
   last blocks + the notes pathway + fusion + a softmax over the mutually exclusive states of ``labels.LEAF_STATES``
   with the partial-label NLL, de-confounding weights, feature-map border masking, modality dropout, AdamW, cosine
   schedule); out-of-fold state logits for the full input and, where both exist, image-only and notes-only;
4. ``calibration``: one state temperature and the operating thresholds (a sensitivity target; COVID-19 also a
   specificity floor on adult non-COVID films) on the out-of-fold predictions; ``heldout_metrics``: AUC/F1/
   sensitivity/specificity per finding and per source with patient-bootstrap 95% CIs, and a TF-IDF baseline;
5. the final model on all records, with the out-of-distribution reference and the adult-scope check; ``outputs``:
   the checkpoint and metrics.json;
6. ``crossval``: leave-one-source-out: train without each image source (both NIH sets count as one hospital) and
   test on it.

Resumable: each finished fold / left-out source is saved under ``OUT/folds``; cached features under ``OUT/cache``.
Distributed (``torchrun --nproc_per_node N -m medmm.train``): DistributedDataParallel over the trainable part,
each rank a DistributedSampler shard of the same patient-grouped fold; rank 0 writes the outputs.
"""

from __future__ import annotations

import logging
import time

import torch

from medmm.training.calibration import expert_slope, state_probs  # noqa: F401 - imported from here by scripts, tests
from medmm.training.cli import parse_args, recipe_config  # noqa: F401 - recipe_config: imported from here by tests
from medmm.training.crossval import CrossValidation, cross_validate, leave_sources_out
from medmm.training.loop import dist_info, pick_device, seed_everything
from medmm.training.outputs import print_summary, run_summary, save_final_checkpoint, write_metrics, write_rank_summary
from medmm.training.run import Run, fit_final

log = logging.getLogger("medmm.train")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rank, world = dist_info()
    device = pick_device(config.device, world)
    seed_everything(config.train.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    from medmm.energy import EnergyMeter

    t0 = time.time()
    total_meter = EnergyMeter(split=False).start()  # the folds' meters nest inside; do not share with them
    run = Run(config, rank, world, device)
    log.info("caches ready in %.0f s (%d records)", time.time() - t0, len(run.records))
    cv = cross_validate(run) if config.train.folds >= 2 else CrossValidation()
    final, ood, scope = fit_final(run)
    final.state_head.temperature.fill_(cv.temperature)
    total_meter.stop()
    write_rank_summary(run.out, rank, final, cv.metrics)
    if rank != 0:
        return 0
    summary = run_summary(run, argv, total_meter.record.to_dict(), cv, time.time() - t0)
    ckpt = save_final_checkpoint(run, final, ood, scope, cv, summary)
    write_metrics(run.out, cv.metrics, summary)
    log.info("checkpoint written to %s; metrics in %s", ckpt, run.out / "metrics.json")
    if config.loso:
        cv.metrics["leave_one_source_out"] = leave_sources_out(run, cv.temperature, cv.thresholds)
        summary["duration_with_loso_s"] = round(time.time() - t0, 1)
        write_metrics(run.out, cv.metrics, summary)
    print_summary(cv.metrics, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
