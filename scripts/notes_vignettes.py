"""Do the notes move the findings the way the clinical evidence does? The vignette suite on real films.

For every film and every vignette (``tests/data/vignettes.json``: a note and the direction a clinician expects per
finding, written from the literature, not from this code), the shipped pipeline predicts the film alone and the film
with the note; a case passes when the change has the expected sign (``up``: higher, ``down``: lower, compared in
log-odds so a film already at 0.999 still counts) or, for ``same``, when no probability moves by 0.01 or more.

    .venv/bin/python scripts/notes_vignettes.py                      # 10 films per group, every group
    .venv/bin/python scripts/notes_vignettes.py --per-group 40 --json runs/vignettes.json

Film groups (from ../shared/data, a fixed random draw): Kermany normal / bacterial / viral (children), NIH adult
normal / pneumonia, ``nih_sample`` abnormal, the COVID collection (COVID-19 and other findings), and the three DICOM
files. Notes marked ``optional`` (other languages) are reported apart and are not in the headline share.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from collections import defaultdict
from pathlib import Path

from medmm.notes.vignettes import load, run
from medmm.training.data import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]

def film_groups(per_group: int, seed: int = 0) -> dict[str, list[Path]]:
    rng = random.Random(seed)

    def pick(paths: list[Path]) -> list[Path]:
        paths = sorted(paths)
        return rng.sample(paths, min(per_group, len(paths)))

    k = SHARED_DATA / "kermany224" / "train"
    groups = {
        "kermany normal": pick(list((k / "NORMAL").glob("*.jpeg"))),
        "kermany bacterial": pick([p for p in (k / "PNEUMONIA").glob("*.jpeg") if "bacteria" in p.name]),
        "kermany viral": pick([p for p in (k / "PNEUMONIA").glob("*.jpeg") if "virus" in p.name]),
    }
    for folder, group, keep in (("nih_adult", "nih normal", lambda r: r["nih_labels"] == "No Finding"),
                                ("nih_adult", "nih pneumonia", lambda r: "Pneumonia" in r["nih_labels"]),
                                ("nih_sample", "nih_sample abnormal", lambda r: r["nih_labels"] != "No Finding")):
        with open(SHARED_DATA / folder / "metadata.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if keep(r)]
        groups[group] = pick([SHARED_DATA / folder / "images" / r["image"] for r in rows])
    with open(SHARED_DATA / "covid_notes" / "metadata.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh)]
    covid = SHARED_DATA / "covid_notes" / "images"
    groups["covid collection COVID-19"] = pick([covid / r["image"] for r in rows if "COVID-19" in r["finding"]])
    groups["covid collection other"] = pick([covid / r["image"] for r in rows
                                             if "COVID-19" not in r["finding"] and r["finding"] != "todo"])
    groups["dicom"] = sorted((SHARED_DATA / "dicom").glob("*.dcm"))
    return {g: [p for p in ps if p.exists()] for g, ps in groups.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vignettes", default=str(ROOT / "tests" / "data" / "vignettes.json"))
    ap.add_argument("--per-group", type=int, default=10, help="films drawn per group (default 10)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--json", default=None, help="write every case and the summary here")
    ap.add_argument("--failures", type=int, default=15, help="print this many failing cases")
    args = ap.parse_args(argv)

    from medmm.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(args.checkpoint) if args.checkpoint else Pipeline.from_checkpoint()
    vignettes = load(args.vignettes)
    groups = film_groups(args.per_group)
    t0 = time.perf_counter()
    cases = run(pipe, [(g, f) for g, films in groups.items() for f in films], vignettes)
    elapsed = time.perf_counter() - t0

    def share(rows: list[dict]) -> str:
        n = len(rows)
        return f"{sum(r['ok'] for r in rows) / n:.3f} ({sum(r['ok'] for r in rows)}/{n})" if n else "–"

    main_rows = [c for c in cases if not c["optional"]]
    print(f"films: {sum(map(len, groups.values()))} in {len(groups)} groups; vignettes: {len(vignettes)} "
          f"({sum(bool(v.get('optional')) for v in vignettes)} optional); {elapsed:.0f} s")
    print(f"\nexpected sign, all (film, note, finding) cases: {share(main_rows)}")
    by = defaultdict(list)
    for c in main_rows:
        by[("expected", c["expected"])].append(c)
        by[("finding", c["finding"])].append(c)
        by[("group", c["group"])].append(c)
        by[("note population", c["population"])].append(c)
    for key in sorted(by):
        print(f"  {key[0]:>16} {key[1]:<28} {share(by[key])}")
    print(f"  optional (other languages): {share([c for c in cases if c['optional']])}")
    failing = defaultdict(list)
    for c in main_rows:
        if not c["ok"]:
            failing[(c["vignette"], c["finding"], c["expected"])].append(c)
    print(f"\nfailing (vignette, finding, expected): {len(failing)} kinds")
    for (vid, finding, expected), rows in sorted(failing.items(), key=lambda kv: -len(kv[1]))[:args.failures]:
        r = rows[0]
        print(f"  {vid:<32} {finding:<20} expected {expected:<4} failed on {len(rows):>3} films "
              f"(e.g. {r['group']}: {r['before']:.3f} -> {r['after']:.3f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": share(main_rows), "cases": cases}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
