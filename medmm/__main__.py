"""Command line: ``python -m medmm {predict,evaluate,explain,bench,serve,warmup} ...``.

Bad input exits with code 2 and a one-line message on stderr (no traceback) that names the file. Paths and
arguments are checked before torch and the model are imported, so a mistake is refused in well under a second.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from medmm.config import META_FILE, RUNTIME_CHOICES  # no torch import
from medmm.explain.methods import DEFAULT_METHOD, METHODS, NOTES_METHODS, method_help  # no torch import
from medmm.scale.cli import add_engine_arguments, add_serve_arguments, cmd_serve  # no ray import

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """Turned into a one-line message on stderr and exit code 2."""




def resolve_checkpoint(path: str | None) -> str | None:
    """A checkpoint folder, or a training run folder holding one in ``checkpoint/`` (``runs/smoke``)."""
    if path is None:
        return None
    folder = Path(path)
    if (folder / META_FILE).is_file():
        return str(folder)
    if (folder / "checkpoint" / META_FILE).is_file():
        return str(folder / "checkpoint")
    if not folder.exists():
        raise CliError(f"checkpoint folder not found: {folder}")
    raise CliError(f"no medmm checkpoint in {folder}: expected {folder / META_FILE} or "
                   f"{folder / 'checkpoint' / META_FILE}")


def _require_file(path: str | Path, what: str) -> Path:
    """Input files are named by their file name only: folders of patient files often carry identifiers."""
    path = Path(path)
    if not path.exists():
        raise CliError(f"{what} not found: {path.name}")
    if not path.is_file():
        raise CliError(f"{what} is not a file: {path.name}")
    return path


def _require_folder_for(path: str | Path | None, what: str) -> None:
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise CliError(f"folder of {what} does not exist: {Path(path).parent}")


def _validate(args) -> None:
    """Every path argument checked before anything heavy is imported (messages name the file)."""
    for image in getattr(args, "images", None) or ():
        _require_file(image, "image")
    if getattr(args, "notes_file", None):
        _require_file(args.notes_file, "notes file")
    if getattr(args, "manifest", None):
        _require_file(args.manifest, "manifest")
    for attr, what in (("report_out", "--report-out"), ("out", "--out")):
        if attr == "out" and getattr(args, "command", None) == "explain":
            continue   # an output folder, created when missing
        _require_folder_for(getattr(args, attr, None), what)
    args.checkpoint = resolve_checkpoint(getattr(args, "checkpoint", None))


def _load_scans_naming_the_file(paths: list[Path]):
    """``medmm.io.load_scans``; on failure the message names the file that failed (io's own never does)."""
    from medmm.io import ScanError, load_scan, load_scans

    try:
        return load_scans(paths)
    except ScanError as e:
        culprit = paths[0] if len(paths) == 1 else None
        for path in paths if culprit is None else ():
            try:
                load_scan(path)
            except ScanError:
                culprit = path
                break
        raise CliError(f"{culprit.name}: {e}" if culprit else str(e)) from None


def _pipeline(checkpoint: str | None, runtime: str | None = None):
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.pipeline import Pipeline
    from medmm.runtime import RuntimeUnavailable

    try:
        pipe = Pipeline.from_checkpoint(resolve_checkpoint(checkpoint) or DEFAULT_CHECKPOINT, runtime=runtime)
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
    from medmm.scale.cli import check_engine, predict_manifest_ray

    check_engine(args)
    if args.manifest:
        if not args.out:
            raise CliError("--manifest needs --out OUT.csv")
        if args.engine == "ray":
            from medmm.models.checkpoint import DEFAULT_CHECKPOINT

            return predict_manifest_ray(args, args.checkpoint or str(DEFAULT_CHECKPOINT))
        return _predict_manifest(args)
    notes = _notes_arg(args)
    if not args.images and not (notes or "").strip():
        raise CliError("give at least one IMAGE or --notes")
    # bad files fail before torch and the model load
    scans = _load_scans_naming_the_file([Path(p) for p in args.images]) if args.images else []
    from medmm.service import run_request

    pipe = _pipeline(args.checkpoint, getattr(args, "runtime", None))
    result = run_request(pipe, scans, notes)
    if args.report_out and result.report is not None:
        write_report(result.report, result.prediction, args.report_out)
    payload = result.to_json()
    if args.json:
        print(json.dumps(payload, indent=2))
    elif payload["status"] == "refused":
        print(f"refused: {payload['refusal']}")
    else:
        print(f"{'finding':<22} {'probability':>11} {'threshold':>9}  call")
        for c in payload["calls"]:
            label = result.prediction.call(c["finding"]).label
            print(f"{c['finding']:<22} {c['probability']:>11.3f} {c['threshold']:>9.3f}  {label}")
        for w in payload["warnings"]:
            print(f"warning: {w}")
        e = payload["energy"]
        print(f"energy: {e['joules']:.2f} J ({e['method']}); latency {payload['latency_s']:.3f} s")
        if payload["report"]:
            print("\n" + payload["report"])
    return 0


def write_report(report, prediction, path: str | Path) -> None:
    """``--report-out``: a DICOM Basic Text SR for ``.dcm``, the report text for any other suffix."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        from medmm.report import to_dicom_sr

        to_dicom_sr(report, prediction, path)
    else:
        path.write_text(report.to_text(), encoding="utf-8")


def _predict_manifest(args) -> int:
    """Batch predictions, one row at a time (``medmm.scale.manifest.score_row``: the columns, warnings and per-row
    errors; ``--engine ray`` runs the same function over Ray Data). A bad row is reported in its ``error`` column
    and does not stop the batch."""
    manifest = Path(args.manifest)
    try:
        rows = list(csv.DictReader(manifest.open(newline="", encoding="utf-8")))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CliError(f"cannot read manifest {manifest.name}: {e}") from None
    if rows and "image" not in rows[0] and "notes" not in rows[0]:
        raise CliError(f"manifest {manifest.name} needs an 'image' and/or 'notes' column")
    from medmm.scale.manifest import output_fields, pin_scoring_threads, score_row

    pin_scoring_threads()          # one intra-op thread, as each --engine ray actor: the same file from both engines
    pipe = _pipeline(args.checkpoint, getattr(args, "runtime", None))
    pin_scoring_threads()
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=output_fields(pipe.findings))
        writer.writeheader()
        for row in rows:
            writer.writerow(score_row(pipe, row, manifest.parent))
    return 0


def cmd_evaluate(args) -> int:
    from medmm.training.evaluate import evaluate_manifest

    pipe = _pipeline(args.checkpoint, getattr(args, "runtime", None))
    result = evaluate_manifest(pipe, args.manifest, n_boot=args.bootstrap)
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text if args.json else evaluation_table(result))
    return 0


def _ci(metric) -> str:
    if not metric:
        return "—"
    lo, hi = metric.get("ci95", [float("nan")] * 2)
    return f"{metric['value']:.3f} [{lo:.2f}-{hi:.2f}]"


def evaluation_table(result: dict) -> str:
    """``evaluate``'s result as a readable table (value [95% CI]); ``--json`` prints the full JSON."""
    lines = [f"manifest {result['manifest']}: {result['evaluated']} of {result['rows']} rows evaluated "
             f"(checkpoint {result.get('checkpoint')})", "",
             f"{'finding':<20} {'n':>5} {'pos':>5} {'thr':>5}  {'AUC [95% CI]':<19} {'sensitivity':<19} "
             f"{'specificity':<19} {'F1':<19} {'ECE':>5}"]
    for f, m in result.get("findings", {}).items():
        if m is None:
            lines.append(f"{f:<20} {'':>5} {'':>5} {'':>5}  not evaluable (needs labelled positives and negatives)")
            continue
        ece = m.get("ece")
        lines.append(f"{f:<20} {m['n']:>5} {m['n_positive']:>5} {m['threshold']:>5.2f}  {_ci(m.get('auc')):<19} "
                     f"{_ci(m.get('sensitivity')):<19} {_ci(m.get('specificity')):<19} {_ci(m.get('f1')):<19} "
                     f"{'—' if ece is None else f'{ece:.3f}':>5}")
    errors = result.get("errors") or []
    if errors:
        lines += ["", f"{len(errors)} row(s) could not be evaluated, e.g. row {errors[0]['row']}: {errors[0]['error']}"]
    lines += ["", "95% CIs: patient-level bootstrap. Research evaluation; not a clinical validation."]
    return "\n".join(lines)


def cmd_explain(args) -> int:
    from medmm.explain.files import cli_explain

    pipe = _pipeline(args.checkpoint, getattr(args, "runtime", None))
    return cli_explain(pipe, args.images, _notes_arg(args), finding=args.finding,
                       method=args.method, out_dir=Path(args.out), sanity=args.sanity,
                       notes_method=args.notes_method)


def cmd_warmup(args) -> int:
    """Export the checkpoint's graph set into the runtime cache (``medmm.runtime.warmup``) and open it once under the
    runtime, so that later predictions start without torch; says what it wrote and how long it took."""
    import time

    from medmm import runtime as rt
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT, read_meta
    from medmm.runtime.cache import CacheNotWritable

    t = time.perf_counter()
    checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    try:
        name = rt.resolve(args.runtime)
    except rt.RuntimeUnavailable as e:
        raise CliError(str(e)) from None
    if name == "torch":
        raise CliError("the torch runtime runs the model itself and has nothing to warm up; install onnxruntime or "
                       "openvino, or name one with --runtime")
    folder = rt.cache_dir()
    try:
        found = rt.warm(checkpoint)
    except CacheNotWritable as e:
        raise CliError(str(e)) from None
    from medmm.gate import load_gate
    from medmm.runtime.graphs import open_graphs

    graphs = open_graphs(read_meta(checkpoint), name, "cpu", load_gate(checkpoint))
    for session in (graphs.encoders.image, graphs.encoders.text, graphs.gate, graphs.head):
        if session is not None:
            session.get()   # compiled once: OpenVINO keeps the compiled model in its cache folder
    print(f"warmup: {name} graphs of {found.weights_sha256[:12]} ({', '.join(sorted(found.files))}) in {folder} "
          f"({time.perf_counter() - t:.1f} s)")
    return 0


# runtimes side by side stay in the quick run (issue 15: `bench --json` compares them in one run; ~10 s)
QUICK_BENCH = {"repeats": 5, "no_cold": True, "no_experiments": True, "explain_repeats": 1}


def cmd_bench(args) -> int:
    """Quick by default (about a minute on 2 CPU cores); ``--full`` runs the cold start, every experiment and
    runtime comparison and ``--repeats`` (default 20) timed repeats (several minutes). Says how long it took."""
    import time

    t = time.perf_counter()
    if not args.full:
        for key, value in QUICK_BENCH.items():
            if key != "repeats" or args.repeats is None:
                setattr(args, key, value)
    elif args.repeats is None:
        args.repeats = 20
    print(f"bench: {'full' if args.full else 'quick (use --full for cold start, experiments, runtimes)'} mode...",
          file=sys.stderr)
    from medmm.tools.bench import cli_bench

    code = cli_bench(args)
    print(f"bench: {'full' if args.full else 'quick'} mode took {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return code




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
    p.add_argument("--report-out", default=None, help="write the drafted report here: FILE.dcm -> DICOM Basic Text SR, "
                   "any other suffix -> text")
    p.add_argument("--manifest", default=None, help="CSV with columns image and optional notes")
    p.add_argument("--out", default=None, help="output CSV for --manifest (.parquet: Parquet, with --engine ray)")
    add_engine_arguments(p)
    _runtime_arg(p)
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="metrics (AUC, sensitivity, specificity, F1 with CIs) on a labelled manifest")
    e.add_argument("--manifest", required=True, help="CSV: image, notes, patient_id, one column per finding (1/0/blank)")
    e.add_argument("--checkpoint", default=None)
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    e.add_argument("--out", default=None, help="also write the JSON here")
    e.add_argument("--json", action="store_true", help="print the full JSON instead of the table")
    _runtime_arg(e)
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("explain", help="saliency overlay, token attributions and modality contributions")
    x.add_argument("images", nargs="*")
    x.add_argument("--notes", default=None)
    x.add_argument("--notes-file", default=None)
    x.add_argument("--finding", default=None, help="finding to explain (default: the most probable)")
    x.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS, help=f"image attribution: {method_help()}")
    x.add_argument("--checkpoint", default=None)
    x.add_argument("--out", required=True, help="output folder")
    x.add_argument("--sanity", action="store_true", help="also run the randomisation and deletion/insertion "
                   "checks (seconds; written to summary.json)")
    x.add_argument("--notes-method", default=NOTES_METHODS[0], choices=NOTES_METHODS,
                   help="note-word scores: each concept's effect on the finding through its published likelihood "
                        "ratio (the notes reach the prediction only as that evidence)")
    _runtime_arg(x)
    x.set_defaults(func=cmd_explain)

    b = sub.add_parser("bench", help="latency / throughput / memory benchmark")
    b.add_argument("--json", action="store_true")
    b.add_argument("--checkpoint", default=None)
    b.add_argument("--repeats", type=int, default=None, help="timed repeats (default: 5 quick, 20 with --full)")
    b.add_argument("--full", action="store_true", help="cold start, every experiment and runtime comparison "
                   "(several minutes); default: a quick run of about a minute")
    b.add_argument("--out", default=None)
    b.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for the run (ONNX runtimes follow); 1 on a shared 2-core box, where "
                        "two spinning OpenMP threads make torch 10-50x slower (docs/bench.md)")
    _runtime_arg(b, bench=True)
    b.set_defaults(func=cmd_bench)

    s = sub.add_parser("serve", help="the Gradio app on Ray Serve: model replicas behind one front end (docs/scale.md)")
    add_serve_arguments(s)
    _runtime_arg(s)
    s.set_defaults(func=lambda args: cmd_serve(args, args.checkpoint or str(_default_checkpoint())))

    w = sub.add_parser("warmup", help="build the runtime's cache for a checkpoint ahead of time (every forward-only "
                       "stage as a graph), so predictions start without torch")
    w.add_argument("--checkpoint", default=None, help="checkpoint folder (default: checkpoints/default)")
    w.add_argument("--runtime", default=None, choices=RUNTIME_CHOICES,
                   help="runtime to compile the graphs for (default: $MEDMM_RUNTIME or auto); the folder is "
                        "$MEDMM_CACHE_DIR or ~/.cache/medmm/onnx")
    w.set_defaults(func=cmd_warmup)
    return ap


def _default_checkpoint():
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT

    return DEFAULT_CHECKPOINT


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        _validate(args)                   # before torch / the model are imported: a typo is refused at once
    except CliError as e:
        return _fail(e)
    try:
        return args.func(args)
    except Exception as e:  # noqa: BLE001 - user errors get one line; anything else propagates
        if _user_error(e):
            return _fail(e)
        raise


# (module, class) of the errors whose messages are meant for the user; checked without importing the modules
# (an error class can only have been raised if its module is loaded), so a bad file never waits for torch.
_USER_ERRORS = (("medmm.io.scan", "ScanError"), ("medmm.pipeline", "InputError"),
                ("medmm.models.checkpoint", "CheckpointError"), ("medmm.explain.explanation", "ExplainError"),
                ("medmm.scale", "ScaleError"), ("medmm.runtime", "RuntimeUnavailable"))


def _user_error(e: Exception) -> bool:
    if isinstance(e, (CliError, FileNotFoundError, IsADirectoryError, PermissionError)):
        return True
    return any(isinstance(e, getattr(sys.modules[m], name)) for m, name in _USER_ERRORS
               if m in sys.modules and hasattr(sys.modules[m], name))


def _fail(e: Exception) -> int:
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and getattr(e, "filename", None) and str(e.filename) not in msg:
        msg = f"{msg}: {e.filename}"
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
