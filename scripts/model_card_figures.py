"""Tables and the reliability plot for MODEL_CARD.md, from a training run's outputs.

    python scripts/model_card_figures.py runs/default            # prints Markdown, writes docs/img/reliability.png

Everything printed is computed from ``RUN/metrics.json`` and ``RUN/oof.npz`` written by ``python -m medmm.train``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medmm.labels import FINDINGS  # noqa: E402
from medmm.metrics import expected_calibration_error, reliability_curve  # noqa: E402


def fmt(m: dict | None, key: str) -> str:
    if not m or key not in m:
        return "–"
    v = m[key]
    lo, hi = v["ci95"]
    return f"{v['value']:.3f} ({lo:.3f}–{hi:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--plot", type=Path, default=Path("docs/img/reliability.png"))
    args = ap.parse_args()
    res = json.loads((args.run / "metrics.json").read_text())
    metrics = res["metrics"]
    oof = np.load(args.run / "oof.npz")
    print("| finding | n (pos) | AUC (95% CI) | AUC folds mean ± std | sensitivity | specificity | F1 | threshold | ECE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in FINDINGS:
        m = metrics["findings"].get(f)
        if not m:
            print(f"| {f} | – | – | – | – | – | – | – | – |")
            continue
        print(f"| {f} | {m['n']} ({m['n_positive']}) | {fmt(m, 'auc')} | {m['auc_folds_mean']:.3f} ± {m['auc_folds_std']:.3f} "
              f"| {fmt(m, 'sensitivity')} | {fmt(m, 'specificity')} | {fmt(m, 'f1')} | {m['threshold']:.3f} | {m['ece']:.3f} |")
    print()
    print("| subset | n (pos) | AUC (95% CI) | sensitivity | specificity | F1 |")
    print("|---|---|---|---|---|---|")
    for name, m in metrics["subsets"].items():
        if m:
            print(f"| {name} | {m['n']} ({m['n_positive']}) | {fmt(m, 'auc')} | {fmt(m, 'sensitivity')} | "
                  f"{fmt(m, 'specificity')} | {fmt(m, 'f1')} |")
    # calibration before/after, and reliability plot
    labels, probs, logits = oof["labels"], oof["probs"], oof["full"]
    fig = Figure(figsize=(9, 4.2), dpi=120)
    axes = fig.subplots(1, 2)
    print()
    print("| finding | ECE before calibration (sigmoid of raw logits) | ECE after (cross-fitted temperature) |")
    print("|---|---|---|")
    for j, f in enumerate(FINDINGS):
        known = ~np.isnan(labels[:, j]) & ~np.isnan(probs[:, j])
        if known.sum() < 10 or len(np.unique(labels[known, j])) < 2:
            continue
        raw = 1 / (1 + np.exp(-logits[known, j]))
        print(f"| {f} | {expected_calibration_error(labels[known, j], raw):.3f} | "
              f"{expected_calibration_error(labels[known, j], probs[known, j]):.3f} |")
        if f in ("Pneumonia", "COVID-19"):
            ax = axes[0 if f == "Pneumonia" else 1]
            for name, p, style in (("raw", raw, "o--"), ("calibrated", probs[known, j], "s-")):
                mp, fo, _ = reliability_curve(labels[known, j], p)
                ax.plot(mp, fo, style, label=name)
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
            ax.set_title(f"{f} (out-of-fold, n={int(known.sum())})")
            ax.set_xlabel("mean predicted probability")
            ax.set_ylabel("observed frequency")
            ax.legend(loc="upper left")
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot)
    print(f"\n(reliability plot written to {args.plot})")
    print("\ntraining:", json.dumps({k: res["training"][k] for k in ("records", "patients", "duration_s")}))
    e = res["training"]["energy"]["total"]
    print(f"energy total: {e['joules']:.0f} J = {e['wh']:.2f} Wh ({e['method']})")


if __name__ == "__main__":
    main()
