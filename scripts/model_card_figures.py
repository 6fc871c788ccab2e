"""Tables and the reliability plot for MODEL_CARD.md, from a training run's outputs.

    python scripts/model_card_figures.py runs/default            # prints Markdown, writes docs/img/reliability.png

Everything printed is computed from ``RUN/metrics.json`` and ``RUN/oof.npz`` written by ``python -m medmm.train``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from medmm.labels import FINDINGS, marginals
from medmm.training.metrics import expected_calibration_error, reliability_curve


def fmt(m: dict | None, key: str) -> str:
    if not m or key not in m:
        return "–"
    v = m[key]
    lo, hi = v["ci95"]
    return f"{v['value']:.3f} ({lo:.3f}–{hi:.3f})"


def _row(name: str, m: dict | None, extra: str = "") -> str:
    if not m:
        return f"| {name} | – | – | – | – |{extra}"
    return (f"| {name} | {m['n']} ({m['n_positive']}) | {fmt(m, 'auc')} | {fmt(m, 'sensitivity')} | "
            f"{fmt(m, 'specificity')} |{extra}")


def findings_table(metrics: dict) -> None:
    print("| finding | n (pos) | AUC (95% CI) | AUC folds mean ± std | sensitivity | specificity | F1 | threshold | ECE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in FINDINGS:
        m = metrics["findings"].get(f)
        if not m:
            print(f"| {f} | – | – | – | – | – | – | – | – |")
            continue
        print(f"| {f} | {m['n']} ({m['n_positive']}) | {fmt(m, 'auc')} | {m['auc_folds_mean']:.3f} ± {m['auc_folds_std']:.3f} "
              f"| {fmt(m, 'sensitivity')} | {fmt(m, 'specificity')} | {fmt(m, 'f1')} | {m['threshold']:.3f} | {m['ece']:.3f} |")


def source_table(per_source: dict, title: str) -> None:
    print(f"\n{title}\n")
    print("| source | finding | n (pos) | AUC (95% CI) | sensitivity | specificity | ECE |")
    print("|---|---|---|---|---|---|---|")
    for source, res in per_source.items():
        for f, m in res.items():
            if isinstance(m, dict) and "auc" in m and isinstance(m["auc"], dict):
                print(f"| {source} | {f} | {m['n']} ({m['n_positive']}) | {fmt(m, 'auc')} | {fmt(m, 'sensitivity')} | "
                      f"{fmt(m, 'specificity')} | {m.get('ece', float('nan')):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--plot", type=Path, default=Path("docs/img/reliability.png"))
    args = ap.parse_args()
    res = json.loads((args.run / "metrics.json").read_text())
    metrics = res["metrics"]
    findings_table(metrics)
    source_table(metrics.get("sources", {}), "Out-of-fold, per image source (stored thresholds):")
    loso = metrics.get("leave_one_source_out") or {}
    if loso:
        table = {f"{site} → {src}": blk for site, res_ in loso.items() for src, blk in res_.items()
                 if isinstance(blk, dict) and src != "trained_on" and not src.startswith("covid19_with_notes")}
        source_table(table, "Leave-one-source-out (trained without the site, tested on it; stored thresholds):")
        if "covid" in loso:
            print("\n| COVID collection left out, COVID-19 on rows with notes | n (pos) | AUC | sensitivity | specificity |")
            print("|---|---|---|---|---|")
            for cond in ("full", "image_only", "notes_only"):
                print(_row(cond, loso["covid"].get(f"covid19_with_notes_{cond}")))
    print("\n| subset | n (pos) | AUC (95% CI) | sensitivity | specificity |")
    print("|---|---|---|---|---|")
    for name, m in metrics["subsets"].items():
        if m and "auc" in m:
            print(_row(name, m))
        elif m:
            print(f"| {name} | {m['n']} | rate {m['rate']:.3f} | | |")
    calibration(args.run, metrics, args.plot)


def calibration(run: Path, metrics: dict, plot: Path) -> None:
    oof = np.load(run / "oof.npz")
    labels, probs, sources = oof["labels"], oof["probs"], oof["sources"]
    raw_all = marginals(_softmax(oof["full"]))
    print("\n| source | finding | n | ECE before (T = 1) | ECE after (cross-fitted temperature) |")
    print("|---|---|---|---|---|")
    fig = Figure(figsize=(9, 4.2), dpi=120)
    axes = fig.subplots(1, 2)
    for src in sorted(set(sources.tolist())):
        for j, f in enumerate(FINDINGS):
            known = (sources == src) & ~np.isnan(labels[:, j]) & ~np.isnan(probs[:, j])
            if known.sum() < 30 or len(np.unique(labels[known, j])) < 2:
                continue
            print(f"| {src} | {f} | {int(known.sum())} | {expected_calibration_error(labels[known, j], raw_all[known, j]):.3f} | "
                  f"{expected_calibration_error(labels[known, j], probs[known, j]):.3f} |")
    for ax, (f, title) in zip(axes, (("Pneumonia", "Pneumonia"), ("No Finding", "No Finding"))):
        j = FINDINGS.index(f)
        for src, style in (("kermany", "o-"), ("nih", "s-"), ("nih_sample", "^-"), ("covid", "d-")):
            known = (sources == src) & ~np.isnan(labels[:, j]) & ~np.isnan(probs[:, j])
            if known.sum() < 30 or len(np.unique(labels[known, j])) < 2:
                continue
            mp, fo, _ = reliability_curve(labels[known, j], probs[known, j])
            ax.plot(mp, fo, style, label=f"{src} (n={int(known.sum())})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_title(f"{title}: calibrated, out-of-fold")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed frequency")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot)
    print(f"\n(reliability plot written to {plot}; state temperature {metrics.get('temperature', float('nan')):.3f})")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.max(np.nan_to_num(z), axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


if __name__ == "__main__":
    main()
