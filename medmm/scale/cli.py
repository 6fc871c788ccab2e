"""The Ray commands of the CLI: ``medmm serve`` and ``medmm predict --manifest ... --engine ray`` (docs/scale.md).

Arguments are checked, and Ray's presence too, before anything heavy is imported; errors are :class:`ScaleError`
(one line, exit code 2, like every CLI error).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from medmm.scale import ScaleError

ENGINES = ("local", "ray")
EXIT_INTERRUPTED = 130                  # the shell's code for Ctrl-C
RAY_EXTRA = 'pip install ".[ray]" (or: pip install -r requirements-ray.txt)'


def require_ray(what: str) -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ScaleError(f"{what} needs Ray, an optional extra: {RAY_EXTRA}")


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="local", choices=ENGINES,
                   help="--manifest only: local = this process; ray = Ray Data over a pool of model actors "
                        "($RAY_ADDRESS or a local cluster); the same output file")
    p.add_argument("--workers", type=_positive, default=None, help="--engine ray: model actors, one CPU each (default 1)")
    p.add_argument("--block-rows", type=_positive, default=None,
                   help="--engine ray: rows per block, the unit of work and of resuming (default 128); finished "
                        "blocks are kept in OUT.parts/ until the output is complete, and the same command resumes")


def check_engine(args: argparse.Namespace) -> None:
    """``--engine ray`` / ``--workers`` only where they do something (no option is silently ignored)."""
    if args.engine == "ray" and not args.manifest:
        raise ScaleError("--engine ray scores a --manifest")
    for option, value in (("--workers", args.workers), ("--block-rows", getattr(args, "block_rows", None))):
        if value is not None and args.engine != "ray":
            raise ScaleError(f"{option} needs --engine ray")


def add_serve_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--checkpoint", default=None, help="checkpoint folder (default: checkpoints/default)")
    s.add_argument("--replicas", type=_positive, default=None, help="model replicas, one CPU each (default 1)")
    s.add_argument("--min-replicas", type=_positive, default=None, help="autoscaling: lower bound (with --max-replicas)")
    s.add_argument("--max-replicas", type=_positive, default=None, help="autoscaling: upper bound")
    s.add_argument("--max-ongoing", type=_positive, default=4, help="requests one replica holds at once")
    s.add_argument("--max-batch-size", type=_positive, default=4,
                   help="@serve.batch: image-encoder calls grouped into one forward (at most --max-ongoing)")
    s.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="@serve.batch: how long the first call waits for company")
    s.add_argument("--host", default="127.0.0.1", help="address of Serve's HTTP proxy")
    s.add_argument("--port", type=int, default=8000, help="port of Serve's HTTP proxy")


def serve_options(args: argparse.Namespace, checkpoint: str) -> Any:
    from medmm.scale.serve import ServeOptions

    if args.batch_wait_ms < 0:
        raise ScaleError("--batch-wait-ms must be 0 or more")
    if args.replicas is not None and (args.min_replicas or args.max_replicas):
        raise ScaleError("give --replicas or --min-replicas/--max-replicas, not both")
    options = ServeOptions(checkpoint=checkpoint, replicas=args.replicas or 1, min_replicas=args.min_replicas,
                           max_replicas=args.max_replicas, max_ongoing=args.max_ongoing,
                           max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms, host=args.host,
                           port=args.port, runtime=getattr(args, "runtime", None))
    try:
        options.deployment_options()
    except ValueError as e:
        raise ScaleError(str(e)) from None
    return options


def cmd_serve(args: argparse.Namespace, checkpoint: str) -> int:
    options = serve_options(args, checkpoint)
    require_ray("medmm serve")
    from medmm.scale.serve import start

    start(options, blocking=True)
    return 0


def predict_manifest_ray(args: argparse.Namespace, checkpoint: str) -> int:
    require_ray("--engine ray")
    from medmm.scale.batch import BLOCK_ROWS, Interrupted, run_manifest

    try:
        summary = run_manifest(args.manifest, args.out, checkpoint, getattr(args, "runtime", None), args.workers or 1,
                               args.block_rows or BLOCK_ROWS)
    except Interrupted as e:                       # Ctrl-C: the finished blocks stay for the rerun
        print(str(e), file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"{summary['rows']} rows -> {args.out}: {summary['scored_rows']} scored now, "
          f"{summary['resumed_rows']} resumed from an earlier run's blocks", file=sys.stderr)
    print(json.dumps(summary), file=sys.stderr)
    return 0
