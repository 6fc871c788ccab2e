"""Fit and measure the input gate (``medmm.gate``): chest radiograph or not, frontal or lateral; write ``gate.json``.

Data: every chest film of ``../shared`` (Kermany, the COVID collection, NIH ``nih_adult`` and ``nih_sample``) and a
corpus of images that are not chest radiographs, built by ``scripts/build_nonchest_corpus.py`` (photos, document
pages, radiographs of other body parts, CT/MR/US slices, synthetic noise, heavily cropped chest films; its
``manifest.csv`` names each file's origin and licence). Features: the image encoder's frozen stages (``medmm.gate``).

Stated before measuring, and not tuned afterwards: multinomial logistic regression over frontal chest film / lateral
chest film / not a chest radiograph (standardised features, C = 0.01, classes weighted equally), refusal when
P(frontal) + P(lateral) < 0.5, a lateral view when P(lateral) > P(frontal). (A first version with separate
chest and lateral probes was dropped before shipping: the chest probe, fitted with 48 laterals among 7,000 frontal
films, gave lateral films a chest probability near 0.5.)

How each rate is measured (none on the data the probe was fitted to):

* chest films refused, per source: **leave-one-source-out** (the probe never saw a film of that source: the
  figure for a new hospital's films);
* non-chest images refused, per category: 5-fold cross-validation grouped by origin (all variants of one original
  image in one fold); files the loader already refuses (blank images) count as refused;
* lateral views: patient-grouped 5-fold cross-validation on the COVID collection (its ``view`` column: L vs PA/AP),
  and the share of the other sources' frontal films called lateral.

    .venv/bin/python scripts/input_gate.py --corpus /work/nonchest_corpus [--out checkpoints/default]
        [--json docs/input_gate.json] [--cache runs/gate]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from medmm.gate import CLASSES, InputGate, LinearProbe
from medmm.io import ScanError
from medmm.models.checkpoint import DEFAULT_CHECKPOINT
from medmm.training.data import SHARED_DATA

C_REG, CHEST_T, STAGES, GRID = 0.01, 0.5, 4, 4
FRONTAL, LATERAL, OTHER = range(3)      # medmm.gate.CLASSES
CHEST_SOURCES = ("kermany", "covid", "nih_adult", "nih_sample")
# corpus panels that show part of a child's chest (FracAtlas montages): not negatives
NOT_NEGATIVE = ("fractured_samples_panel04", "fractured_samples_panel05", "fractured_samples_panel06",
                "fractured_samples_panel07", "sample_annotations_train_panel01", "sample_annotations_train_panel03")


def chest_files() -> dict[str, list[tuple[str, str, str]]]:
    """source -> [(path, patient, view)] for every chest film of ../shared."""
    from medmm.labels import kermany_patient_id

    out: dict[str, list[tuple[str, str, str]]] = {}
    out["kermany"] = [(str(p), kermany_patient_id(p.name), "PA")
                      for p in sorted((SHARED_DATA / "kermany224" / "train").glob("*/*.jpeg"))]
    rows = list(csv.DictReader((SHARED_DATA / "covid_notes" / "metadata.csv").open(encoding="utf-8")))
    out["covid"] = [(str(SHARED_DATA / "covid_notes" / "images" / r["image"]), r["patientid"], r["view"]) for r in rows]
    for name in ("nih_adult", "nih_sample"):
        rows = list(csv.DictReader((SHARED_DATA / name / "metadata.csv").open(encoding="utf-8")))
        out[name] = [(str(SHARED_DATA / name / "images" / r["image"]), r["patient_id"], r["view"]) for r in rows]
    return out


def featurise(pipe, gate: InputGate, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Gate features per file (zeros + ok=False where the loader refuses the file)."""
    feats, ok = [], []
    for p in paths:
        try:
            x = pipe.prepare([p], gate_inputs=False).pixels[0]
            feats.append(gate.features(pipe.model.image_encoder, x)[0])
            ok.append(True)
        except ScanError:
            feats.append(None)
            ok.append(False)
    dim = next(len(f) for f in feats if f is not None)
    return np.stack([np.zeros(dim) if f is None else f for f in feats]), np.array(ok)


def fit(x: np.ndarray, y: np.ndarray) -> LinearProbe:
    """Multinomial logistic regression over the classes present in ``y`` (0 frontal, 1 lateral, 2 other), returned
    with a row for every class of ``CLASSES`` (a class absent from ``y`` gets a -inf-like intercept)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    lr = LogisticRegression(C=C_REG, class_weight="balanced", max_iter=5000).fit((x - scaler.mean_) / scale, y)
    coef, intercept = np.zeros((len(CLASSES), x.shape[1])), np.full(len(CLASSES), -1e3)
    if len(lr.classes_) == 2:     # sklearn's binary form: one row for the second class
        a, b = (int(c) for c in lr.classes_)
        coef[b], intercept[b], intercept[a] = lr.coef_[0], lr.intercept_[0], 0.0
    else:
        for row, c in enumerate(lr.classes_):
            coef[int(c)], intercept[int(c)] = lr.coef_[row], lr.intercept_[row]
    return LinearProbe(scaler.mean_, scale, coef, intercept)


def p_chest(probe: LinearProbe, x: np.ndarray) -> np.ndarray:
    p = probe.prob(x)
    return p[:, FRONTAL] + p[:, LATERAL]


def grouped_folds(groups: np.ndarray, k: int = 5, seed: int = 0) -> np.ndarray:
    uniq = np.random.default_rng(seed).permutation(np.unique(groups))
    fold_of = {g: i % k for i, g in enumerate(uniq)}
    return np.array([fold_of[g] for g in groups])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="folder written by scripts/build_nonchest_corpus.py")
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    ap.add_argument("--out", default=None, help="folder for gate.json (default: the checkpoint's)")
    ap.add_argument("--json", default=None, help="write the measured rates here")
    ap.add_argument("--cache", default="runs/gate", help="feature cache folder")
    args = ap.parse_args(argv)

    from medmm.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(args.checkpoint, runtime="torch")
    empty = LinearProbe(np.zeros(1), np.ones(1), np.zeros((len(CLASSES), 1)), np.zeros(len(CLASSES)))
    gate = InputGate(STAGES, GRID, empty, CHEST_T)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    files = chest_files()
    manifest = list(csv.DictReader((Path(args.corpus) / "manifest.csv").open(encoding="utf-8")))
    manifest = [r for r in manifest if not any(k in r["path"] for k in NOT_NEGATIVE)]
    sets = {**{s: [p for p, _, _ in v] for s, v in files.items()},
            "nonchest": [str(Path(args.corpus) / r["path"]) for r in manifest]}
    feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, paths in sets.items():
        f = cache / f"{name}.npz"
        if f.is_file() and list(np.load(f)["paths"]) == paths:
            d = np.load(f)
            feats[name] = (d["x"], d["ok"])
        else:
            feats[name] = featurise(pipe, gate, paths)
            np.savez(f, paths=np.array(paths), x=feats[name][0], ok=feats[name][1])
        print(f"{name}: {len(paths)} files, {int((~feats[name][1]).sum())} refused by the loader", flush=True)

    xc = np.concatenate([feats[s][0][feats[s][1]] for s in CHEST_SOURCES])
    src = np.concatenate([[s] * int(feats[s][1].sum()) for s in CHEST_SOURCES])
    view_c = np.concatenate([np.array([v for _, _, v in files[s]])[feats[s][1]] for s in CHEST_SOURCES])
    yc = np.where(view_c == "L", LATERAL, FRONTAL)       # unlabelled views ('', '?') count as frontal
    xn_all, ok_n = feats["nonchest"]
    category = np.array([r["category"] for r in manifest])
    origin = np.array([r["origin"].split(";")[0].split(" crop box")[0] for r in manifest])
    xn, cat_n, folds = xn_all[ok_n], category[ok_n], grouped_folds(origin[ok_n])

    # chest films: leave-one-source-out
    chest_refused = {}
    for held in CHEST_SOURCES:
        probe = fit(np.concatenate([xc[src != held], xn]), np.r_[yc[src != held], np.full(len(xn), OTHER)])
        p = p_chest(probe, xc[src == held])
        chest_refused[held] = {"refused": float(np.mean(p < CHEST_T)), "n": int((src == held).sum())}
        views = np.array([v for _, _, v in files[held]])[feats[held][1]]
        frontal = np.isin(views, ["PA", "AP", "AP Supine"])
        if not frontal.all():   # the COVID collection also has lateral views and unlabelled ones
            chest_refused[held].update({"refused_frontal": float(np.mean(p[frontal] < CHEST_T)),
                                        "n_frontal": int(frontal.sum()),
                                        "refused_lateral": float(np.mean(p[views == "L"] < CHEST_T)),
                                        "n_lateral": int((views == "L").sum())})
    # non-chest images: grouped 5-fold
    pn = np.zeros(len(xn))
    for k in range(5):
        probe = fit(np.concatenate([xc, xn[folds != k]]), np.r_[yc, np.full((folds != k).sum(), OTHER)])
        pn[folds == k] = p_chest(probe, xn[folds == k])
    nonchest_refused = {}
    for c in sorted(set(category)):
        loader = int(((category == c) & ~ok_n).sum())
        gated = int((pn[cat_n == c] < CHEST_T).sum())
        n = int((category == c).sum())
        nonchest_refused[c] = {"refused": (loader + gated) / n, "n": n, "by_loader": loader,
                               "distinct_origins": int(len(set(origin[category == c])))}
    total = sum(v["n"] for v in nonchest_refused.values())
    overall = sum(v["refused"] * v["n"] for v in nonchest_refused.values()) / total

    # lateral views: COVID collection, patient-grouped folds (the other sources and the corpus always in training)
    in_covid = src == "covid"
    pid = np.array([p for _, p, _ in files["covid"]])[feats["covid"][1]]
    vf = grouped_folds(pid)
    lat_pred = np.zeros(int(in_covid.sum()), bool)
    for k in range(5):
        train = ~in_covid.copy()
        train[np.where(in_covid)[0][vf != k]] = True
        probe = fit(np.concatenate([xc[train], xn]), np.r_[yc[train], np.full(len(xn), OTHER)])
        p = probe.prob(xc[in_covid][vf == k])
        lat_pred[vf == k] = p[:, LATERAL] > p[:, FRONTAL]
    yv = view_c[in_covid]
    labelled = np.isin(yv, ["L", "PA", "AP", "AP Supine"])
    lateral = {"laterals": int((yv == "L").sum()), "laterals_recognised": float(lat_pred[yv == "L"].mean()),
               "frontal": int((labelled & (yv != "L")).sum()),
               "frontal_called_lateral": float(lat_pred[labelled & (yv != "L")].mean())}

    figures = {"chest_refused_leave_one_source_out": chest_refused, "nonchest_refused_grouped_cv": nonchest_refused,
               "nonchest_refused_overall": overall, "lateral": lateral,
               "recipe": f"multinomial logistic regression C={C_REG}, balanced classes {list(CLASSES)}; refuse "
                         f"P(frontal) + P(lateral) < {CHEST_T}; lateral when P(lateral) > P(frontal); features: "
                         f"frozen stages 1-{STAGES}, {GRID}x{GRID} pooled map + channel mean and std"}
    print("chest films refused (leave-one-source-out):")
    for s, v in chest_refused.items():
        more = (f" (frontal {v['refused_frontal']:.4f} of {v['n_frontal']}, lateral {v['refused_lateral']:.4f} of "
                f"{v['n_lateral']})" if "n_frontal" in v else "")
        print(f"  {s:<11} {v['refused']:.4f} of {v['n']}{more}")
    print(f"non-chest images refused (grouped 5-fold): overall {overall:.3f}")
    for c, v in nonchest_refused.items():
        print(f"  {c:<17} {v['refused']:.3f} of {v['n']} ({v['distinct_origins']} origins; {v['by_loader']} by the "
              "loader)")
    print(f"lateral: {lateral}")

    # the shipped probes: every film and every corpus image
    final = InputGate(STAGES, GRID, fit(np.concatenate([xc, xn]), np.r_[yc, np.full(len(xn), OTHER)]), CHEST_T,
                      figures)
    print(f"wrote {final.save(args.out or args.checkpoint)}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
