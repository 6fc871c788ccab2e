"""Cold start in a fresh interpreter: import, checkpoint load, first and second request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]

_COLD_START_CODE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
t_torch = time.perf_counter()
if int(sys.argv[3]) > 0:
    torch.set_num_threads(int(sys.argv[3]))
from medmm.pipeline import Pipeline
t_import = time.perf_counter()
pipe = Pipeline.from_checkpoint(sys.argv[1])
t_load = time.perf_counter()
with torch.inference_mode():
    pipe.predict([sys.argv[2]])
t_first = time.perf_counter()
with torch.inference_mode():
    pipe.predict([sys.argv[2]])
t_second = time.perf_counter()
print(json.dumps({"import_torch_s": t_torch - t0, "import_medmm_s": t_import - t_torch,
                  "checkpoint_load_s": t_load - t_import, "first_request_s": t_first - t_load,
                  "second_request_s": t_second - t_first,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def cold_start(checkpoint: str | Path, scan: str | Path, timeout_s: float = 600.0, threads: int | None = None,
               runtime: str | None = None) -> dict[str, Any]:
    """Import + checkpoint load + first request in a fresh interpreter (OS file cache warm, as on a restart).

    The child uses ``threads`` intra-op threads when given (as the parent does with ``--threads``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if runtime:
        env["MEDMM_RUNTIME"] = runtime  # the child's Pipeline.from_checkpoint reads it
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", _COLD_START_CODE, str(checkpoint), str(scan),
                               str(threads or 0)], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"cold start took longer than {timeout_s:.0f} s"}
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"cold-start subprocess failed (exit {proc.returncode}): {tail}"}
    out = {k: round(v, 3) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    out["process_wall_s"] = round(wall, 3)  # includes interpreter start-up and exit
    out["import_s"] = round(out["import_torch_s"] + out["import_medmm_s"], 3)
    out["ready_s"] = round(out["import_s"] + out["checkpoint_load_s"], 3)  # what a server waits before serving
    return out
