"""CPU time of one page analysis in-process: ``app.analyze`` (prediction, Grad-CAM with note words, the per-request
saliency check, drawing, exports) over real Kermany films, as the served app runs it (``serving_pipeline``, one
analysis at a time), without Gradio, HTTP or clients.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python scripts/request_cpu.py [--films 40]
    PYTHONPATH=../old OMP_NUM_THREADS=1 .venv/bin/python scripts/request_cpu.py --root ../old   # another checkout

``--root`` (with ``PYTHONPATH`` set to the same folder) runs another checkout's ``app.py`` and ``medmm``, e.g. a
``git worktree`` of an earlier commit, for a before/after comparison in one session: run the two alternately, twice,
and compare the pairs. Prints CPU and wall milliseconds per request.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--films", type=int, default=40, help="Kermany training films, every third of the sorted list")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="the checkout to run")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    os.chdir(root)
    import app

    import medmm

    if not Path(medmm.__file__).resolve().is_relative_to(root) or not Path(app.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"set PYTHONPATH={root}: medmm and app.py came from {Path(medmm.__file__).parent}")
    from medmm.pipeline import Pipeline
    from medmm.service import serving_pipeline
    from medmm.training.data import SHARED_DATA

    films = sorted((SHARED_DATA / "kermany224" / "train").glob("*/*.jpeg"))[: 3 * args.films: 3]
    if not films:
        raise SystemExit(f"no Kermany films under {SHARED_DATA}")
    pipe, _ = serving_pipeline(Pipeline.from_checkpoint(app.DEFAULT_CHECKPOINT), 1)

    def analyse(i: int, film: Path) -> None:
        app.analyze(pipe, [str(film)], f"Fever and cough for 3 days. token{i}", None, "gradcam",
                    progress=lambda *a, **k: None)

    analyse(-1, films[0])                                       # warm: first-use costs are not a request's
    cpu, wall = time.process_time(), time.perf_counter()
    for i, film in enumerate(films):
        analyse(i, film)
    n = len(films)
    print(f"{root}: {n} requests, CPU {(time.process_time() - cpu) / n * 1000:.1f} ms/request, "
          f"wall {(time.perf_counter() - wall) / n * 1000:.1f} ms/request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
