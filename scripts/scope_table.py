"""Write a checkpoint's scope table (``scope.csv``): which findings may be called for which population, and why.

The criterion, stated before looking at the figures and applied to every row alike:

    A finding may be called from the image for a population when the lower end of the 95 % confidence interval
    (patient bootstrap) of its out-of-fold AUC is at least ``MIN_LOWER_CI`` = 0.75, measured on unseen patients of a
    source of that population that has no known confound between label and acquisition.

Where each figure comes from (``runs/oof/oof.npz``: the shipped recipe's patient-grouped cross-validation, the
image-only state logits of the fold that did not train on the patient):

* children: Kermany (one hospital, pediatric); subtypes are scored *within pneumonia* (a subtype's share of the
  pneumonia probability, bacterial vs viral films), which is what naming a subtype claims;
* adults: ``nih_sample`` only (one film per patient across the NIH archive). ``nih_adult`` is not used: its
  normals and pneumonias come from different periods of the archive (README of ``../shared``), so a model can
  separate them by period. Adult subtypes: the COVID collection's bacterial vs viral pneumonias (unseen patients);
* COVID-19: *within one source*, the COVID collection's COVID-19 films against its other films (unseen patients).
  A comparison across sources (COVID collection against NIH or Kermany) measures the source, not the disease
  (DeGrave et al., Nat Mach Intell 2021), so it is never used; the script also prints the site-stratified pairwise
  AUC within the collection's hospitals and cities (COVID-19 vs other films of the same site). COVID-19 fails the
  criterion in every population and
  is therefore marked ``with test``: called only when the notes carry a SARS-CoV-2 test result;
* no image (notes alone): Pneumonia from published pre-test probabilities and likelihood ratios (the notes panel
  says which); No Finding and the bacterial subtype cannot be judged without a film; a viral pneumonia (and
  COVID-19) only with a test result in the notes.

It also measures how often the subtype rule (``medmm.calls``: the leading subtype must beat its sibling's share of
pneumonia by ``SUBTYPE_MARGIN``) leaves a Kermany pneumonia's subtype indeterminate, and how often a named subtype
is right, at the stated margin and at others for comparison (none of them is chosen here).

    .venv/bin/python scripts/scope_table.py runs/oof [--out checkpoints/default/scope.csv] [--json docs/scope.json]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from medmm.calls import SUBTYPE_MARGIN, decide
from medmm.labels import FINDINGS, marginals
from medmm.models.checkpoint import DEFAULT_CHECKPOINT
from medmm.training.metrics import binary_metrics
from medmm.training.calibration import state_probs

MIN_LOWER_CI = 0.75
COLUMNS = ["population", "finding", "call", "metric", "value", "ci_low", "ci_high", "n", "n_positive", "measured_on",
           "note"]
SUBTYPES = ("Bacterial pneumonia", "Viral pneumonia")


def _row(population: str, finding: str, m: dict | None, measured_on: str, metric: str, *, call: str | None = None,
         note: str = "") -> dict:
    """A scope row from a metrics dict (``binary_metrics``); ``call`` forces the decision (no image, COVID-19)."""
    if m is None:
        return {"population": population, "finding": finding, "call": call or "no", "metric": "", "value": "",
                "ci_low": "", "ci_high": "", "n": "", "n_positive": "", "measured_on": "", "note": note}
    auc = m["auc"]
    passes = auc["ci95"][0] >= MIN_LOWER_CI
    return {"population": population, "finding": finding, "call": call or ("yes" if passes else "no"),
            "metric": metric, "value": f"{auc['value']:.3f}", "ci_low": f"{auc['ci95'][0]:.3f}",
            "ci_high": f"{auc['ci95'][1]:.3f}", "n": m["n"], "n_positive": m["n_positive"], "measured_on": measured_on,
            "note": note}


def within_site_pairs(sources: np.ndarray, y: np.ndarray, score: np.ndarray, ok: np.ndarray) -> dict:
    """COVID-19 vs other films of the *same* site of the COVID collection (its ``location`` column): the share of
    (COVID-19, other) pairs from one site where the COVID-19 film scores higher, pooled over sites with at least 3
    of each (ties count half). Rows are matched to the collection's metadata through the default sources' records."""
    from medmm.config import TrainConfig
    from medmm.training.data import SHARED_DATA, load_records

    cfg = TrainConfig()
    records = load_records(cfg.sources, None, cfg.limit_per_source, cfg.seed)
    if len(records) != len(sources):
        raise SystemExit("the run's rows are not the default sources' records")
    meta = {r["image"]: r["location"].strip() for r in
            csv.DictReader((SHARED_DATA / "covid_notes" / "metadata.csv").open(encoding="utf-8"))}
    by_site: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if r.source == "covid" and ok[i] and not np.isnan(y[i]):
            site = meta.get(Path(r.image).name, "")
            if site:
                by_site.setdefault(site, []).append(i)
    wins = n = 0.0
    used = {}
    for site, idx in by_site.items():
        pos = [i for i in idx if y[i] == 1]
        neg = [i for i in idx if y[i] == 0]
        if len(pos) < 3 or len(neg) < 3:
            continue
        used[site] = [len(pos), len(neg)]
        for i in pos:
            for j in neg:
                wins += 1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0
                n += 1
    return {"auc": wins / n if n else float("nan"), "pairs": int(n), "sites": used}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", default="runs/oof", help="a training run folder with oof.npz")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--out", default=None, help="scope.csv to write (default: beside the checkpoint)")
    ap.add_argument("--json", default=None, help="also write the figures (and the subtype rule's rates) here")
    args = ap.parse_args(argv)

    oof = np.load(Path(args.run) / "oof.npz", allow_pickle=False)
    meta = json.loads((Path(args.checkpoint) / "medmm.json").read_text())
    thresholds = meta["thresholds"]
    f = {name: i for i, name in enumerate(FINDINGS)}
    labels, sources, patients = oof["labels"], oof["sources"], oof["patients"]
    ok = ~np.isnan(oof["image_only"]).any(1)
    probs = np.full((len(labels), len(FINDINGS)), np.nan)
    probs[ok] = marginals(state_probs(oof["image_only"][ok].astype(np.float64), 1.0))

    def metrics(source: str, finding: str, within: str | None = None, score=None) -> dict | None:
        rows = (sources == source) & ok & ~np.isnan(labels[:, f[finding]])
        if within is not None:
            rows &= labels[:, f[within]] == 1
        y = labels[rows, f[finding]]
        if len(np.unique(y)) < 2:
            return None
        s = probs[rows, f[finding]] if score is None else score[rows]
        return binary_metrics(y, s, thresholds[finding], groups=patients[rows])

    share = {k: probs[:, f[k]] / np.maximum(probs[:, f["Pneumonia"]], 1e-9) for k in SUBTYPES}
    oof_on = "out-of-fold AUC"
    rows = []
    # children: Kermany
    for name in ("No Finding", "Pneumonia"):
        rows.append(_row("child", name, metrics("kermany", name), "unseen Kermany patients, children", oof_on))
    for name in SUBTYPES:
        rows.append(_row("child", name, metrics("kermany", name, "Pneumonia", share[name]),
                         "unseen Kermany patients with pneumonia, bacterial vs viral by share of pneumonia", oof_on))
    rows.append(_row("child", "COVID-19", None, "", "", call="with test",
                     note="no child film with COVID-19 was available to train or measure on (Kermany predates 2020)"))
    # adults: nih_sample; subtypes within the COVID collection's pneumonias
    for name in ("No Finding", "Pneumonia"):
        rows.append(_row("adult", name, metrics("nih_sample", name),
                         "unseen NIH patients across the archive, nih_sample", oof_on))
    for name in SUBTYPES:
        rows.append(_row("adult", name, metrics("covid", name, "Pneumonia", share[name]),
                         "unseen COVID-collection patients with pneumonia, by share of pneumonia", oof_on))
    covid = metrics("covid", "COVID-19")
    covid_row = _row("adult", "COVID-19", covid,
                     "unseen COVID-collection patients, COVID-19 vs the collection's other films, within one source",
                     oof_on)
    covid_row["call"] = "yes" if covid_row["call"] == "yes" else "with test"
    rows.append(covid_row)
    # no image
    rows.append(_row("no image", "No Finding", None, "", "", note="a normal study cannot be judged without a film"))
    rows.append(_row("no image", "Pneumonia", None, "", "", call="yes",
                     note="published pre-test probabilities and likelihood ratios (see the notes panel)"))
    rows.append(_row("no image", "Bacterial pneumonia", None, "", "", note="the subtype cannot be judged without a film"))
    rows.append(_row("no image", "Viral pneumonia", None, "", "", call="with test",
                     note="named from the notes only with a viral test result (SARS-CoV-2, influenza)"))
    rows.append(_row("no image", "COVID-19", None, "", "", call="with test",
                     note="called from the notes only with a SARS-CoV-2 test result"))

    out = Path(args.out or Path(args.checkpoint) / "scope.csv")
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print(f"criterion: lower 95% CI of the out-of-fold AUC >= {MIN_LOWER_CI}")
    for r in rows:
        fig = f"{r['value']} ({r['ci_low']}-{r['ci_high']}, n={r['n']})" if r["value"] else r["note"]
        print(f"  {r['population']:<9} {r['finding']:<20} {r['call']:<10} {fig}")
    print(f"wrote {out}")

    # the subtype rule on Kermany pneumonias (every pneumonia film, whether or not Pneumonia is called)
    k = (sources == "kermany") & ok & (labels[:, f["Pneumonia"]] == 1)
    yb = labels[k, f["Bacterial pneumonia"]]
    rates = {}
    for margin in (0.0, 0.1, SUBTYPE_MARGIN, 0.3, 0.4):
        d = share["Bacterial pneumonia"][k] - share["Viral pneumonia"][k]
        bacterial, viral = d >= margin, -d >= margin
        named = bacterial | viral
        right = np.where(bacterial, yb == 1, yb == 0)[named]
        rates[f"{margin:.2f}"] = {"indeterminate": float(1 - named.mean()), "named_right": float(right.mean()),
                                  "n": int(k.sum())}
    # and through the full rule (thresholds, hierarchy) on the films where Pneumonia is called
    called = indeterminate = right = named = 0
    for i in np.where(k)[0]:
        calls, _ = decide(dict(zip(FINDINGS, probs[i])), thresholds)
        by = {c.finding: c for c in calls}
        if not by["Pneumonia"].called:
            continue
        called += 1
        indeterminate += any(by[s].reason == "subtype indeterminate" for s in SUBTYPES)
        sub = [s for s in SUBTYPES if by[s].called]
        if sub:
            named += 1
            right += (sub[0] == "Bacterial pneumonia") == (labels[i, f["Bacterial pneumonia"]] == 1)
    rule = {"pneumonia_called": called, "indeterminate": indeterminate / max(called, 1),
            "subtype_named": named / max(called, 1), "named_right": right / max(named, 1)}
    print(f"\nsubtype rule on Kermany pneumonias (out-of-fold), margin {SUBTYPE_MARGIN}: "
          f"indeterminate {rates[f'{SUBTYPE_MARGIN:.2f}']['indeterminate']:.3f}, named right "
          f"{rates[f'{SUBTYPE_MARGIN:.2f}']['named_right']:.3f} (n={int(k.sum())}); other margins for comparison:")
    for m, r in rates.items():
        print(f"  margin {m}: indeterminate {r['indeterminate']:.3f}, named right {r['named_right']:.3f}")
    print(f"full rule where Pneumonia is called ({called} films): indeterminate {rule['indeterminate']:.3f}, a "
          f"subtype named {rule['subtype_named']:.3f}, named right {rule['named_right']:.3f}")
    pairs = within_site_pairs(sources, labels[:, f["COVID-19"]], probs[:, f["COVID-19"]], ok)
    print(f"COVID-19 within one hospital or city (COVID-collection sites with >= 3 COVID-19 and >= 3 other films): "
          f"site-stratified pairwise AUC {pairs['auc']:.3f} over {pairs['pairs']} pairs, sites {pairs['sites']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"criterion_min_lower_ci": MIN_LOWER_CI, "rows": rows,
                                               "subtype_margins": rates, "subtype_rule": rule,
                                               "covid_within_site_pairs": pairs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
