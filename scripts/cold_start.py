"""Cold start, measured in one run (issue 28, item 1): a one-image ``medmm predict IMAGE --json`` in a fresh
interpreter against ``python -c "import torch"``, and the app's first page after ``python app.py``.

Each figure is wall time from process start (the OS file cache warm, as on a restart): the prediction and the
``import torch`` baseline interleaved ``--repeats`` times (medians and their ratio; the target is <= 1.0), then the
app started ``--app-repeats`` times (first ``GET /`` answered; and when its background warm-up logged that the model
is loaded). The runtime cache is warmed first (``python -m medmm warmup``, not timed), so the figures are those of a
warm cache; ``--cold-cache`` instead empties a private cache folder before each prediction (the first run exports).

    .venv/bin/python scripts/cold_start.py [--repeats 5] [--image FILE] [--no-app] [--json] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT / "assets" / "examples" / "04_adult_dicom_dx.dcm"
READY_LINE = "model loaded:"    # app.warm_up's log line once the pipeline, notes reader and torch model are loaded


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return wall


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_start(env: dict[str, str], timeout_s: float = 300.0) -> dict[str, float | None]:
    """``python app.py``: seconds to the first answered ``GET /``, and to the warm-up's "model loaded" log line."""
    port = _free_port()
    env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "PYTHONUNBUFFERED": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_TEMP_DIR", None)
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        page = ready = None
        try:
            while time.perf_counter() - t < timeout_s and (page is None or ready is None):
                if proc.poll() is not None:
                    raise SystemExit(f"app.py exited ({proc.returncode}): {Path(log.name).read_text()[-2000:]}")
                if page is None:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                            if r.status == 200:
                                page = time.perf_counter() - t
                    except OSError:
                        pass
                if ready is None and READY_LINE in Path(log.name).read_text(errors="replace"):
                    ready = time.perf_counter() - t
                time.sleep(0.02)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"first_page_s": page, "model_ready_s": ready}


def measure(image: Path, repeats: int, app_repeats: int, cold_cache: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    private = None
    if cold_cache:
        private = Path(tempfile.mkdtemp(prefix="medmm-cold-"))
        env["MEDMM_CACHE_DIR"] = str(private)
    else:
        _wall([sys.executable, "-m", "medmm", "warmup"], env)      # not timed: the cache is warm from here on
    predict = [sys.executable, "-m", "medmm", "predict", str(image), "--json"]
    torch_s, predict_s = [], []
    try:
        _wall([sys.executable, "-c", "import torch"], env)           # not timed: the OS file cache, as on a restart
        for _ in range(repeats):
            torch_s.append(_wall([sys.executable, "-c", "import torch"], env))
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)
            predict_s.append(_wall(predict, env))
        apps = [app_start(env) for _ in range(app_repeats)]
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
    out = {"image": image.name, "cache": "cold (emptied before each run)" if cold_cache else "warm",
           "repeats": repeats, "import_torch_s": torch_s, "predict_s": predict_s,
           "import_torch_median_s": round(statistics.median(torch_s), 3),
           "predict_median_s": round(statistics.median(predict_s), 3)}
    out["predict_over_import_torch"] = round(out["predict_median_s"] / out["import_torch_median_s"], 3)
    if apps:
        pages = [a["first_page_s"] for a in apps if a["first_page_s"] is not None]
        readies = [a["model_ready_s"] for a in apps if a["model_ready_s"] is not None]
        out["app"] = apps
        out["app_first_page_median_s"] = round(statistics.median(pages), 3) if pages else None
        out["app_model_ready_median_s"] = round(statistics.median(readies), 3) if readies else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the film to predict (default: the shipped DICOM)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved pairs (import torch, predict)")
    ap.add_argument("--app-repeats", type=int, default=3, help="app starts (0: none)")
    ap.add_argument("--no-app", action="store_true", help="skip the app (same as --app-repeats 0)")
    ap.add_argument("--cold-cache", action="store_true", help="empty a private runtime cache before each prediction")
    ap.add_argument("--json", action="store_true", help="print the JSON only")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    out = measure(args.image, args.repeats, 0 if args.no_app else args.app_repeats, args.cold_cache)
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
        return 0
    print(f"import torch            median {out['import_torch_median_s']:.2f} s  {[round(x, 2) for x in out['import_torch_s']]}")
    print(f"predict {out['image']:<14} median {out['predict_median_s']:.2f} s  {[round(x, 2) for x in out['predict_s']]}"
          f"  ({out['cache']} cache)")
    print(f"ratio predict / import torch: {out['predict_over_import_torch']:.2f} (target <= 1.0)")
    if "app" in out:
        print(f"app first page          median {out['app_first_page_median_s']} s (target <= 4 s); model loaded "
              f"behind it after {out['app_model_ready_median_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
