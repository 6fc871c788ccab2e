"""Does a refactoring change behaviour? The same requests through this tree and through a git revision, compared.

For each film (``--per-source`` films of every ``../shared`` source, every shared DICOM and the shipped examples),
with and without a note, both trees give: the probabilities (to ``--atol``, default 1e-6), the calls and their
words (table labels), the warnings, the drafted report, and the Grad-CAM map of the explained finding (to 1e-6).
``--train`` also runs the same 2-fold smoke training in both trees and compares the out-of-fold logits and the
checkpoint weights. Exit status 1 on any difference, with the first ones printed.

    .venv/bin/python scripts/refactor_check.py --base HEAD~1 [--per-source 10] [--train]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NOTE = "3-year-old with fever and productive cough for 3 days, SpO2 93%."

# run inside each tree: ``PYTHONPATH=<tree> python -c DUMP <tree> <films.json> <out> <note>`` (the tree's medmm first)
DUMP = r"""
import json, sys
import numpy as np
from medmm.pipeline import Pipeline
from medmm.service import run_request
pipe = Pipeline.from_checkpoint(sys.argv[1] + "/checkpoints/default", runtime="torch")
films, out, arrays = json.load(open(sys.argv[2])), {}, {}
for i, film in enumerate(films):
    for notes in (None, sys.argv[4]):
        key = f"{i}|{notes is not None}"
        try:
            r = run_request(pipe, [film], notes, explain={"finding": None, "method": "gradcam"})
        except Exception as e:  # noqa: BLE001 - a refusal by the loader is behaviour too
            out[key] = {"error": f"{type(e).__name__}: {e}"}
            continue
        p = r.prediction
        out[key] = {"findings": p.findings, "positive": list(p.positive), "warnings": list(r.warnings),
                    "report": r.report.to_text() if r.report else "",
                    "labels": [p.call(f).label for f in p.findings] if hasattr(p, "call") else None}
        if r.explanation is not None and r.explanation.heatmap is not None:
            arrays[key] = np.asarray(r.explanation.heatmap, np.float32)
json.dump(out, open(sys.argv[3] + ".json", "w"))
np.savez(sys.argv[3] + ".npz", **arrays)
"""


def films(per_source: int) -> list[str]:
    from medmm.training.data import SHARED_DATA

    out = []
    for pattern in ("kermany224/train/NORMAL/*", "kermany224/train/PNEUMONIA/*", "covid_notes/images/*",
                    "nih_adult/images/*", "nih_sample/images/*"):
        out += [str(p) for p in sorted(SHARED_DATA.glob(pattern))[:per_source]]
    out += [str(p) for p in sorted((SHARED_DATA / "dicom").glob("*.dcm"))]
    out += [str(p) for p in sorted((ROOT / "assets" / "examples").iterdir()) if p.suffix in (".jpeg", ".jpg", ".dcm")]
    return out


def _env(tree: Path) -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}


def dump(tree: Path, film_list: Path, out: Path) -> tuple[dict, dict]:
    subprocess.run([sys.executable, "-c", DUMP, str(tree), str(film_list), str(out), NOTE], check=True,
                   cwd=tempfile.gettempdir(), env=_env(tree))
    return json.loads(Path(str(out) + ".json").read_text()), dict(np.load(str(out) + ".npz"))


def compare(a: dict, b: dict, maps_a: dict, maps_b: dict, atol: float) -> list[str]:
    diffs = []
    for key in a:
        x, y = a[key], b.get(key)
        if y is None or set(x) != set(y):
            diffs.append(f"{key}: different outputs ({sorted(x)} vs {sorted(y or {})})")
            continue
        if "error" in x:
            if x["error"] != y["error"]:
                diffs.append(f"{key}: error {x['error']!r} vs {y['error']!r}")
            continue
        d = max((abs(x["findings"][f] - y["findings"].get(f, np.inf)) for f in x["findings"]), default=0.0)
        if d > atol or set(x["findings"]) != set(y["findings"]):
            diffs.append(f"{key}: probabilities differ by {d:.2e}")
        for field in ("positive", "warnings", "report", "labels"):
            if x[field] != y[field]:
                diffs.append(f"{key}: {field} differs")
        if (key in maps_a) != (key in maps_b) or (key in maps_a and (
                maps_a[key].shape != maps_b[key].shape or np.abs(maps_a[key] - maps_b[key]).max() > atol)):
            diffs.append(f"{key}: Grad-CAM map differs")
    return diffs


def smoke_train(tree: Path, out: Path) -> None:
    code = (f"import sys; import medmm.training.train as t; "
            f"sys.exit(t.main(['--out', {str(out)!r}, '--folds', '2', '--epochs', '1', '--limit-per-source', '40', "
            "'--aug-views', '1', '--no-progress']))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tempfile.gettempdir(), env=_env(tree))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD", help="the git revision to compare with (default HEAD)")
    ap.add_argument("--per-source", type=int, default=10)
    ap.add_argument("--atol", type=float, default=1e-6)
    ap.add_argument("--train", action="store_true", help="also compare a 2-fold smoke training")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base], cwd=ROOT, check=True)
        try:
            film_list = tmp / "films.json"
            film_list.write_text(json.dumps(films(args.per_source)))
            a, maps_a = dump(base, film_list, tmp / "base_out")
            b, maps_b = dump(ROOT, film_list, tmp / "this_out")
            diffs = compare(a, b, maps_a, maps_b, args.atol)
            print(f"{len(a)} requests ({len(json.loads(film_list.read_text()))} films x with/without a note): "
                  f"{len(diffs)} differences")
            if args.train:
                smoke_train(base, tmp / "train_base")
                smoke_train(ROOT, tmp / "train_this")
                from safetensors.numpy import load_file

                oa, ob = np.load(tmp / "train_base" / "oof.npz"), np.load(tmp / "train_this" / "oof.npz")
                for k in ("full", "image_only", "notes_only"):
                    if not np.allclose(oa[k], ob[k], atol=args.atol, equal_nan=True):
                        diffs.append(f"smoke training: out-of-fold {k} differs")
                wa = load_file(str(tmp / "train_base" / "checkpoint" / "model.safetensors"))
                wb = load_file(str(tmp / "train_this" / "checkpoint" / "model.safetensors"))
                if set(wa) != set(wb) or any(np.abs(wa[k] - wb[k]).max() > args.atol for k in wa):
                    diffs.append("smoke training: checkpoint weights differ")
                print("smoke training compared")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    for d in diffs[:20]:
        print("  " + d)
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
