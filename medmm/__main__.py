"""Command line: ``python -m medmm {predict,evaluate,explain,bench} ...``.

Bad input exits with code 2 and a one-line message on stderr (no traceback).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """Turned into a one-line message on stderr and exit code 2."""


def _pipeline(checkpoint: str | None, runtime: str | None = None):
    from medmm.checkpoint import DEFAULT_CHECKPOINT
    from medmm.pipeline import Pipeline
    from medmm.runtime import RuntimeUnavailable

    try:
        pipe = Pipeline.from_checkpoint(checkpoint or DEFAULT_CHECKPOINT, runtime=runtime)
    except RuntimeUnavailable as e:
        raise CliError(str(e)) from None
    if not pipe.meta.trained:
        print("warning: the checkpoint is UNTRAINED; outputs are placeholders", file=sys.stderr)
    return pipe


def _notes_arg(args) -> str | None:
    if getattr(args, "notes_file", None):
        return Path(args.notes_file).read_text(encoding="utf-8", errors="replace")
    return args.notes


def cmd_predict(args) -> int:
    from medmm.service import run_request

    if args.manifest:
        if not args.out:
            raise CliError("--manifest needs --out OUT.csv")
        return _predict_manifest(args)
    from medmm.io import load_scans

    notes = _notes_arg(args)
    if not args.images and not notes:
        raise CliError("give at least one IMAGE or --notes")
    scans = load_scans([Path(p) for p in args.images]) if args.images else []  # bad files fail before the model loads
    pipe = _pipeline(args.checkpoint, getattr(args, "runtime", None))
    result = run_request(pipe, scans, notes)
    if args.report_out and result.report is not None:
        Path(args.report_out).write_text(result.report.to_text(), encoding="utf-8")
    payload = result.to_json()
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(f"{'finding':<22} {'probability':>11} {'threshold':>9}")
        for f, p in payload["findings"].items():
            mark = "  POSITIVE" if f in payload["positive"] else ""
            print(f"{f:<22} {p:>11.3f} {payload['thresholds'][f]:>9.3f}{mark}")
        for w in payload["warnings"]:
            print(f"warning: {w}")
        e = payload["energy"]
        print(f"energy: {e['joules']:.2f} J ({e['method']}); latency {payload['latency_s']:.3f} s")
        if payload["report"]:
            print("\n" + payload["report"])
    return 0


def _predict_manifest(args) -> int:
    """Batch predictions; a bad row is reported in its ``error`` column and does not stop the batch."""
    from medmm.io import ScanError
    from medmm.pipeline import InputError

    pipe = _pipeline(args.checkpoint, getattr(args, "runtime", None))
    manifest = Path(args.manifest)
    try:
        rows = list(csv.DictReader(manifest.open(newline="", encoding="utf-8")))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CliError(f"cannot read manifest {manifest}: {e}") from None
    if rows and "image" not in rows[0] and "notes" not in rows[0]:
        raise CliError("manifest needs an 'image' and/or 'notes' column")
    fields = ["image", *pipe.findings, "positive", "error"]
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            image = (row.get("image") or "").strip()
            out = {"image": image, "positive": "", "error": ""}
            try:
                path = Path(image) if not image or Path(image).is_absolute() else manifest.parent / image
                pred = pipe.predict([path] if image else [], (row.get("notes") or "").strip() or None)
                out.update({k: f"{v:.6f}" for k, v in pred.findings.items()})
                out["positive"] = ";".join(pred.positive)
            except (ScanError, InputError, OSError) as e:
                out["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
            writer.writerow(out)
    return 0


def cmd_evaluate(args) -> int:
    from medmm.evaluate import evaluate_manifest

    pipe = _pipeline(args.checkpoint, getattr(args, "runtime", None))
    result = evaluate_manifest(pipe, args.manifest, n_boot=args.bootstrap)
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def cmd_explain(args) -> int:
    from medmm.explain import cli_explain

    pipe = _pipeline(args.checkpoint, getattr(args, "runtime", None))
    return cli_explain(pipe, args.images, _notes_arg(args), finding=args.finding,
                       method=args.method, out_dir=Path(args.out), sanity=args.sanity,
                       notes_method=args.notes_method)


def cmd_bench(args) -> int:
    from medmm.bench import cli_bench

    return cli_bench(args)


RUNTIME_CHOICES = ("auto", "torch", "onnxruntime", "openvino")  # = medmm.runtime.CHOICES (that imports torch)


def _runtime_arg(parser: argparse.ArgumentParser, bench: bool = False) -> None:
    parser.add_argument("--runtime", default=None, choices=RUNTIME_CHOICES,
                        help=("encoder runtime of the pipeline under test; every installed runtime is also timed "
                              "side by side" if bench else "encoder runtime for inference")
                        + " (default: $MEDMM_RUNTIME or auto = the fastest installed; explanations always use torch)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m medmm", description="medmm: chest radiograph + notes decision support "
                                 "(research demo; not a diagnosis)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="findings, draft report and energy for one request, or a batch manifest")
    p.add_argument("images", nargs="*", help="PNG/JPEG/DICOM files (several views of one patient are combined)")
    p.add_argument("--notes", default=None, help="clinical notes text")
    p.add_argument("--notes-file", default=None, help="read the clinical notes from a file")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: checkpoints/default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report-out", default=None, help="write the drafted report text to this file")
    p.add_argument("--manifest", default=None, help="CSV with columns image and optional notes")
    p.add_argument("--out", default=None, help="output CSV for --manifest")
    _runtime_arg(p)
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="metrics (AUC, sensitivity, specificity, F1 with CIs) on a labelled manifest")
    e.add_argument("--manifest", required=True, help="CSV: image, notes, patient_id, one column per finding (1/0/blank)")
    e.add_argument("--checkpoint", default=None)
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    e.add_argument("--out", default=None, help="also write the JSON here")
    _runtime_arg(e)
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("explain", help="saliency overlay, token attributions and modality contributions")
    x.add_argument("images", nargs="*")
    x.add_argument("--notes", default=None)
    x.add_argument("--notes-file", default=None)
    x.add_argument("--finding", default=None, help="finding to explain (default: the most probable)")
    x.add_argument("--method", default="gradcam", choices=["gradcam", "ig", "occlusion"])
    x.add_argument("--checkpoint", default=None)
    x.add_argument("--out", required=True, help="output folder")
    x.add_argument("--sanity", action="store_true", help="also run the randomisation and deletion/insertion "
                   "checks (seconds; written to summary.json)")
    x.add_argument("--notes-method", default="gradxinput", choices=["gradxinput", "ig"],
                   help="note-word attribution: gradient x input (fast, default) or Integrated Gradients (~10x slower)")
    _runtime_arg(x)
    x.set_defaults(func=cmd_explain)

    b = sub.add_parser("bench", help="latency / throughput / memory benchmark")
    b.add_argument("--json", action="store_true")
    b.add_argument("--checkpoint", default=None)
    b.add_argument("--repeats", type=int, default=20)
    b.add_argument("--out", default=None)
    _runtime_arg(b, bench=True)
    b.set_defaults(func=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from medmm.checkpoint import CheckpointError
    from medmm.io import ScanError
    from medmm.pipeline import InputError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ScanError, InputError, CheckpointError, FileNotFoundError, IsADirectoryError,
            PermissionError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
