"""The contrastive alignment (CLIP-style InfoNCE between image and notes features), measured once and retired.

COVID collection (the paired films with notes), 3-fold patient-grouped CV, 4 epochs, seeds 0 and 1, weight 0 vs 0.1
(stated before measuring); image-only and image + notes out-of-fold AUCs with paired, patient-bootstrap CIs. The
option was removed after this measurement; commit b9b4f00 is the last with it. To rerun:

    git checkout b9b4f00
    for seed in 0 1; do for w in 0 0.1; do
      .venv/bin/python -m medmm.train --out RUNS/w${w}_s${seed} --sources covid --folds 3 --epochs 4 --aug-views 1 \
          --seed $seed --contrastive-weight $w --no-progress
    done; done
    git checkout -; .venv/bin/python scripts/contrastive_eval.py RUNS [--json OUT.json]
"""
import json
import sys

import numpy as np
from medmm.labels import FINDINGS, marginals
from medmm.training.calibration import state_probs
from medmm.training.metrics import binary_metrics, paired_auc_difference
runs_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/contrastive"
out = {}
for seed in (0, 1):
    runs = {w: np.load(f"{runs_dir}/w{w}_s{seed}/oof.npz") for w in ("0", "0.1")}
    base = runs["0"]
    for finding in ("COVID-19", "Pneumonia"):
        j = FINDINGS.index(finding)
        y = base["labels"][:, j]
        for cond in ("image_only", "full"):
            p = {w: marginals(state_probs(r[cond].astype(float), 1.0))[:, j] for w, r in runs.items()}
            m = ~np.isnan(y) & ~np.isnan(p["0"]) & ~np.isnan(p["0.1"])
            if len(np.unique(y[m])) < 2:
                continue
            a0 = binary_metrics(y[m], p["0"][m], 0.5, groups=base["patients"][m])["auc"]["value"]
            a1 = binary_metrics(y[m], p["0.1"][m], 0.5, groups=base["patients"][m])["auc"]["value"]
            d = paired_auc_difference(y[m], p["0"][m], p["0.1"][m], base["patients"][m])
            out[f"seed{seed} {finding} {cond}"] = {"auc_w0": a0, "auc_w0.1": a1, "delta": d["delta"], "ci95": d["ci95"], "n": int(m.sum())}
            print(f"seed {seed} {finding:<10} {cond:<10} w=0 {a0:.3f}  w=0.1 {a1:.3f}  diff {d['delta']:+.3f} ({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}) n={m.sum()}")
if "--json" in sys.argv:
    with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
        json.dump(out, f, indent=1)
