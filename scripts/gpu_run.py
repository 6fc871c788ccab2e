"""One prepared GPU run (issue 28, item 4): record the machine, bench, time fp32 / fp16 / bf16, train the recipe.

On a machine with CUDA, in one command and a fixed time budget (default 540 s: a 10-minute GPU window less its
start-up), every figure goes to a JSON file under one folder (``--out``, default ``runs/gpu/<UTC timestamp>``):

    machine.json    nvidia-smi, GPU name / memory / capability, torch, CUDA and cuDNN versions, CPUs, RAM, disk,
                    package versions, ONNX Runtime providers, OpenVINO devices, git commit
    bench.json      ``python -m medmm bench --json`` as it stands (log: bench.log)
    precision.json  image encoder (batch 1 and 32) and whole-request latency in fp32 and under autocast fp16 / bf16,
                    max |delta p| against fp32 over the bench inputs; TensorRT and OpenVINO GPU when installed
    plan.json       the training settings chosen and why: each candidate's image-cache size against RAM and disk,
                    its time estimated from rates measured on this machine, the options the training CLI lacks
    train.json      what the training run finished and its figures (out-of-fold and leave-one-source-out AUCs,
                    durations); train/ holds the run (metrics.json, oof.npz, checkpoint/, folds/), train.log its log
    summary.json    every stage's status (ok / partial / skipped / failed), reason and wall time (also printed)

    scripts/gpu_run.sh [--out DIR] [--budget-s 540] [--smoke]        # or: make gpu GPU_ARGS="--out DIR"

Every stage runs in a child process with a time limit taken from the budget, so a stage that crashes or overruns
leaves the others' figures. The training child is stopped at the deadline (SIGTERM, then SIGKILL) and what it
finished is kept: medmm.train writes metrics.json after the CV and the final fit, before leave-one-source-out, and
every finished fold stays in train/folds, so running again with the same ``--out`` resumes (plan.json is reused).
Exit status: 0 when every stage ran (``partial``: stopped at the budget after writing metrics) or was skipped with a
reason; 1 when one failed; 2 without CUDA and without ``--smoke``.

``--smoke``: tiny settings (2 folds, 1 epoch, 8 films per source, 64 px, leave-one-source-out of 1 epoch; the bench
with 1 repeat and 1 thread), CPU allowed. tests/test_gpu_run.py runs it.

Internal: ``gpu_run.py _machine|_precision|_plan|_train ...`` is one stage in its child process (below).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "medmm-gpu-run/1"
DEFAULT_BUDGET_S = 540.0   # a 10-minute GPU window less the machine's start and the copy back
RESERVE_S = 20.0           # kept at the end of the budget for the training child to stop and the summary
STATUS_OK = ("ok", "partial", "skipped")
# medmm.train has no --input-size: the training child sets TrainConfig.input_size itself (``_train``)
MISSING_TRAIN_OPTIONS = [
    "--input-size: python -m medmm.train has no option for TrainConfig.input_size (default 224); this script's "
    "training child (gpu_run.py _train SIZE ...) sets it on the parsed config before medmm.training.train.main runs",
    "full fine-tune: --finetune-blocks goes up to len(stages) - 2 (7 for tf_efficientnet_lite0): the stem conv is "
    "always frozen and its output cached, with the recipe's augmented views, so the cache size limits depth x size",
]
SIZES = (384, 320, 224)    # preferred first: the issue asks for 384 px; ../shared's Kermany films are 224 px


@dataclass(frozen=True)
class Mode:
    """What differs between the GPU run and its CPU smoke test."""

    smoke: bool
    budget_s: float
    bench_args: tuple[str, ...]          # after python -m medmm bench --json
    bench_cap_s: float
    precision_cap_s: float
    precision_repeats: int
    precision_batches: tuple[int, ...]
    train_args: tuple[str, ...]          # after --recipe default
    sizes: tuple[int, ...]               # candidate input sizes, preferred first
    threads: int | None = None           # OMP_NUM_THREADS of the children (None: torch's default)


FULL = Mode(False, DEFAULT_BUDGET_S, ("--repeats", "10"), 150, 60, 50, (1, 32), (), SIZES)
# one thread: on a shared 2-core box two spinning OpenMP threads make torch 10-50x slower (docs/bench.md)
SMOKE = Mode(True, 600.0, ("--repeats", "1", "--threads", "1"), 300, 120, 2, (1,),
             ("--folds", "2", "--epochs", "1", "--loso", "1", "--limit-per-source", "8"), (64,), threads=1)


class Budget:
    def __init__(self, total_s: float) -> None:
        self.total_s, self.t0 = total_s, time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.total_s - self.elapsed()


# ================================================================================================ the driver
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="scripts/gpu_run.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for every JSON (default runs/gpu/<UTC timestamp>)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help=f"wall-clock budget of the whole run in seconds (default {DEFAULT_BUDGET_S:.0f}; "
                         f"--smoke {SMOKE.budget_s:.0f})")
    ap.add_argument("--smoke", action="store_true", help="tiny settings, CPU allowed (the CI check of this script)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CHILDREN:
        return CHILDREN[argv[0]](argv[1:])
    args = parse_args(argv)
    mode = SMOKE if args.smoke else FULL
    if mode.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(mode.threads))  # read by every child
    budget = Budget(args.budget_s or mode.budget_s)
    out = (args.out or ROOT / "runs" / "gpu" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpu_run: {'smoke' if mode.smoke else 'GPU'} run, budget {budget.total_s:.0f} s -> {out}", flush=True)
    stages: dict[str, dict[str, Any]] = {"machine": machine_stage(out, budget)}
    cuda = _read_json(out / "machine.json").get("cuda_available", False)
    if not cuda and not mode.smoke:
        reason = ("no CUDA device (torch.cuda.is_available() is False); --smoke runs the CPU check"
                  if stages["machine"]["status"] == "ok" else "the machine record failed (machine.log)")
        stages.update({k: {"status": "skipped", "reason": reason} for k in ("bench", "precision", "train")})
        write_summary(out, mode, budget, stages)
        print(f"gpu_run: {reason}", file=sys.stderr)
        return 2
    stages["bench"] = bench_stage(out, mode, budget)
    stages["precision"] = precision_stage(out, mode, budget)
    stages["train"] = train_stage(out, mode, budget)
    summary = write_summary(out, mode, budget, stages)
    print(format_summary(summary), flush=True)
    return 0 if all(s["status"] in STATUS_OK for s in stages.values()) else 1


def run_child(cmd: list[str], log_path: Path, limit_s: float) -> dict[str, Any]:
    """Run ``cmd`` from the repository root, output to ``log_path``, stopped after ``limit_s`` seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=max(1.0, limit_s))
            timed_out = False
        except subprocess.TimeoutExpired:
            _stop(proc)
            timed_out = True
        except KeyboardInterrupt:
            _stop(proc)
            raise
    return {"rc": proc.returncode, "timed_out": timed_out, "wall_s": round(time.monotonic() - t, 1),
            "limit_s": round(limit_s, 1)}


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's process group, SIGKILL if it is still there after 15 s."""
    for sig, grace_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace_s)
            break
        except subprocess.TimeoutExpired:
            continue


def _child(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _failed(run: dict[str, Any], log_path: Path, what: str) -> dict[str, Any]:
    """A child that exited non-zero or overran: status failed, with the end of its log as the reason."""
    if run["timed_out"]:
        reason = f"{what} stopped after its {run['limit_s']:.0f} s limit"
    else:
        reason = f"{what} exited with status {run['rc']}"
    tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:] if log_path.exists() else []
    return {"status": "failed", "reason": reason + (": " + " | ".join(tail) if tail else ""), **run}


def machine_stage(out: Path, budget: Budget) -> dict[str, Any]:
    run = run_child(_child("_machine", str(out / "machine.json")), out / "machine.log", min(90.0, budget.left()))
    if run["rc"] != 0 or not (out / "machine.json").exists():
        return _failed(run, out / "machine.log", "the machine record")
    m = _read_json(out / "machine.json")
    gpu = (m.get("gpus") or [{}])[0].get("name", "no GPU")
    return {"status": "ok", "files": ["machine.json"], **run,
            "headline": f"{gpu}; torch {m.get('torch')} (CUDA {m.get('cuda_build')}); {m.get('cpus_usable')} CPUs"}


def bench_stage(out: Path, mode: Mode, budget: Budget) -> dict[str, Any]:
    limit = min(mode.bench_cap_s, budget.left() - RESERVE_S)
    cmd = [sys.executable, "-m", "medmm", "bench", "--json", *mode.bench_args, "--out", str(out / "bench.json")]
    run = run_child(cmd, out / "bench.log", limit)
    if run["rc"] != 0 or not (out / "bench.json").exists():
        return _failed(run, out / "bench.log", "python -m medmm bench")
    b = _read_json(out / "bench.json")
    st = b.get("stages", {})
    headline = (f"{(b.get('machine') or {}).get('device')}, runtime {_runtime_name(b.get('runtime'))}: image encoder "
                f"p50 {_ms(st.get('image_encoder'))}, whole PNG request {_ms(st.get('whole_request.png'))}, "
                f"Grad-CAM {_ms(st.get('explanation.gradcam'))}")
    return {"status": "ok", "files": ["bench.json", "bench.log"], "command": " ".join(cmd[1:]), **run,
            "headline": headline}


def precision_stage(out: Path, mode: Mode, budget: Budget) -> dict[str, Any]:
    limit = min(mode.precision_cap_s, budget.left() - RESERVE_S)
    cmd = _child("_precision", str(out / "precision.json"), str(mode.precision_repeats),
                 ",".join(map(str, mode.precision_batches)))
    run = run_child(cmd, out / "precision.log", limit)
    if run["rc"] != 0 or not (out / "precision.json").exists():
        return _failed(run, out / "precision.log", "the precision timings")
    p = _read_json(out / "precision.json")
    errors = {k: v["error"] for k, v in p["request"].items() if "error" in v}
    b1 = p["image_encoder"]
    parts = [f"{k} {_ms(v.get('batch_1'))}" for k, v in b1.items() if "error" not in v]
    extra = "; ".join(f"{k}: {v['status']}" for k, v in p["accelerators"].items())
    status = "failed" if errors else "ok"
    return {"status": status, "files": ["precision.json"], **run,
            **({"reason": f"autocast failed: {errors}"} if errors else {}),
            "headline": f"encoder batch 1 p50 {', '.join(parts)}; max |dp| vs fp32 {p.get('max_abs_dp_vs_fp32')}; "
                        f"{extra}"}


def train_stage(out: Path, mode: Mode, budget: Budget) -> dict[str, Any]:
    train_dir = out / "train"
    plan_path = out / "plan.json"
    if not plan_path.exists():  # an existing plan (a resumed run) is reused: the same settings resume the folds
        limit = min(90.0, budget.left() - RESERVE_S)
        train_budget = budget.left() - RESERVE_S - 30.0  # what is left once the plan is made (~10-30 s)
        run = run_child(_child("_plan", str(plan_path), str(round(train_budget)), "smoke" if mode.smoke else "full"),
                        out / "plan.log", limit)
        if run["rc"] != 0 or not plan_path.exists():
            return _failed(run, out / "plan.log", "the training plan")
    plan = _read_json(plan_path)
    if plan.get("skipped"):
        return {"status": "skipped", "reason": plan["skipped"], "files": ["plan.json"]}
    chosen = plan["chosen"]
    args = ["--recipe", "default", "--out", str(train_dir), "--finetune-blocks", str(chosen["finetune_blocks"]),
            "--no-progress", *mode.train_args]
    limit = budget.left() - RESERVE_S
    run = run_child(_child("_train", str(chosen["input_size"]), *args), out / "train.log", limit)
    result = training_result(train_dir, out / "train.log", run, plan)
    result["command"] = "python -m medmm.train " + " ".join(args) + f"  (input size {chosen['input_size']} px)"
    (out / "train.json").write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    files = [f for f in ("plan.json", "train.json", "train.log", "train/metrics.json") if (out / f).exists()]
    return {"status": result["status"], **({"reason": result["reason"]} if result.get("reason") else {}),
            "files": files, **run,
            "headline": _train_headline(result)}


def training_result(train_dir: Path, log_path: Path, run: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """What the training child finished (from its files and log) and its figures."""
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
    _set_aside_partial_files(train_dir, log, run)
    folds = sorted(p.stem for p in (train_dir / "folds").glob("*.npz")) if (train_dir / "folds").is_dir() else []
    cache = re.search(r"caches ready in (\d+) s", log)
    metrics_path = train_dir / "metrics.json"
    metrics = _read_json(metrics_path) if metrics_path.exists() else {}
    m, t = metrics.get("metrics", {}), metrics.get("training", {})
    loso_wanted = bool((t.get("config") or {}).get("loso"))
    r: dict[str, Any] = {
        "settings": plan["chosen"], "estimate_s": plan["chosen"].get("estimate_s"), **run,
        "finished": {"cache": cache is not None, "cv_folds": [f for f in folds if f.startswith("fold")],
                     "final_fit": metrics_path.exists(),
                     "leave_one_source_out": [f[5:] for f in folds if f.startswith("loso_")]},
        "cache_s": int(cache.group(1)) if cache else None,
        "duration_s": t.get("duration_s"), "duration_with_loso_s": t.get("duration_with_loso_s"),
        "records": t.get("records"), "config": t.get("config"),
        "energy_j": ((t.get("energy") or {}).get("total") or {}).get("joules"),
        "oof_auc": {f: _value(v.get("auc")) for f, v in (m.get("findings") or {}).items()},
        "loso_auc": _loso_aucs(m.get("leave_one_source_out") or {}),
        "metrics_file": "train/metrics.json" if metrics_path.exists() else None,
    }
    complete = run["rc"] == 0 and metrics_path.exists() and (not loso_wanted or "leave_one_source_out" in m)
    if complete:
        r["status"] = "ok"
        r["cache_removed_gb"] = _remove_cache(train_dir)
    elif run["timed_out"] and metrics_path.exists():
        r["status"], r["reason"] = "partial", ("stopped at the budget during leave-one-source-out: CV + final fit "
                                               "metrics written; run again with the same --out to resume")
    else:
        r.update(_failed(run, log_path, "training"))
        r["status"] = "failed"
    return r


def _set_aside_partial_files(train_dir: Path, log: str, run: dict[str, Any]) -> None:
    """After a stopped child: a fold or cache file cut mid-write would break the resume; rename it *.partial."""
    if not run["timed_out"] or not train_dir.is_dir():
        return
    import zipfile

    for path in (train_dir / "folds").glob("*.npz"):
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip() is not None
        except (zipfile.BadZipFile, OSError):
            bad = True
        if bad:
            path.rename(path.with_suffix(".npz.partial"))
    if "caches ready" not in log:
        for path in (train_dir / "cache").glob("stem_*.pt"):
            path.rename(path.with_suffix(".pt.partial"))


def _remove_cache(train_dir: Path) -> float:
    """The image cache (GBs at 384 px) is only needed to resume; a finished run drops it."""
    cache = train_dir / "cache"
    size = sum(p.stat().st_size for p in cache.glob("*") if p.is_file()) if cache.is_dir() else 0
    shutil.rmtree(cache, ignore_errors=True)
    return round(size / 1e9, 2)


def _loso_aucs(loso: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{left-out site: {source: {finding: AUC}}}`` from medmm.train's leave_one_source_out metrics."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for site, entry in loso.items():
        out[site] = {src: {f: _value(v) for f, v in per.items()}
                     for src, per in entry.items() if isinstance(per, dict)}
    return out


def _value(v: Any) -> float | None:
    v = v.get("value") if isinstance(v, dict) else v
    return None if v is None else round(float(v), 4)


def _train_headline(r: dict[str, Any]) -> str:
    s = r["settings"]
    auc = ", ".join(f"{k} {v}" for k, v in r["oof_auc"].items() if v is not None) or "none"
    done = r["finished"]
    return (f"{s['input_size']} px, {s['finetune_blocks']} tail blocks: {len(done['cv_folds'])} folds, final fit "
            f"{'yes' if done['final_fit'] else 'no'}, left out {done['leave_one_source_out'] or 'none'}; "
            f"{r['wall_s']:.0f} s (estimated {s.get('estimate_s')}); out-of-fold AUC {auc}")


# ============================================================================================== the summary
def write_summary(out: Path, mode: Mode, budget: Budget, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    summary = {"schema": SCHEMA, "out": str(out), "smoke": mode.smoke, "budget_s": budget.total_s,
               "wall_s": round(budget.elapsed(), 1), "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "ok": all(s["status"] in STATUS_OK for s in stages.values()), "stages": stages}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n", encoding="utf-8")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"medmm GPU run{' (smoke)' if summary['smoke'] else ''}: {summary['out']}",
             f"wall {summary['wall_s']:.0f} s of a {summary['budget_s']:.0f} s budget; "
             f"{'every stage ran or was skipped with a reason' if summary['ok'] else 'A STAGE FAILED'}"]
    for name, s in summary["stages"].items():
        wall = f"{s['wall_s']:.0f} s" if "wall_s" in s else "-"
        lines.append(f"  {name:<10}{s['status']:<9}{wall:>6}  {s.get('headline') or s.get('reason', '')}"[:400])
        if s.get("reason") and s.get("headline"):
            lines.append(f"  {'':<25}{s['reason']}"[:400])
    lines.append("files: " + ", ".join(sorted({f for s in summary["stages"].values() for f in s.get("files", [])}
                                               | {"summary.json"})))
    return "\n".join(lines)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _ms(timing: dict[str, Any] | None) -> str:
    return "-" if not timing or timing.get("p50_ms") is None else f"{timing['p50_ms']:.2f} ms"


def _runtime_name(runtime: Any) -> str:
    return runtime.get("name", "?") if isinstance(runtime, dict) else str(runtime)


# ===================================================================================== child: the machine
def child_machine(argv: list[str]) -> int:
    """``_machine OUT.json``: what the figures were measured on."""
    import platform
    from importlib import metadata

    import torch

    from medmm.tools.bench.machine import cpu_model
    from medmm.training.data import SHARED_DATA

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(),
        "platform": platform.platform(), "cpu_model": cpu_model(), "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)), "ram_gb": _meminfo_gb("MemTotal"),
        "ram_available_gb": _meminfo_gb("MemAvailable"), "disk_free_gb": round(shutil.disk_usage(ROOT).free / 1e9, 1),
        "torch": torch.__version__, "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None, "cuda_available": cuda,
        "gpus": [_gpu(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else None,
        "nvidia_smi": _nvidia_smi(),
        "packages": {d: version(d) for d in ("torch", "torchvision", "timm", "transformers", "numpy", "onnx",
                                             "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt",
                                             "torch-tensorrt", "nvidia-ml-py", "medmm")},
        "onnxruntime_providers": _ort_providers(), "openvino_devices": _openvino_devices(),
        "git": _git(), "shared_data": {"path": str(SHARED_DATA), "present": SHARED_DATA.is_dir()},
        "env": {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MEDMM_RUNTIME")
                if k in os.environ},
    }
    Path(argv[0]).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return 0


def _gpu(i: int) -> dict[str, Any]:
    import torch

    p = torch.cuda.get_device_properties(i)
    return {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gb": round(p.total_memory / 1e9, 1),
            "multiprocessors": p.multi_processor_count}


def _meminfo_gb(key: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1e6, 1)
    except OSError:
        pass
    return None


def _nvidia_smi() -> dict[str, Any]:
    if shutil.which("nvidia-smi") is None:
        return {"present": False, "reason": "nvidia-smi is not on PATH"}
    query = "name,driver_version,memory.total,power.limit,clocks.max.sm,pstate,temperature.gpu,utilization.gpu"
    out: dict[str, Any] = {"present": True}
    for key, cmd in (("query", ["nvidia-smi", f"--query-gpu={query}", "--format=csv"]), ("text", ["nvidia-smi"])):
        try:
            out[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            out[key] = f"error: {e}"
    return out


def _ort_providers() -> list[str] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return list(ort.get_available_providers())


def _openvino_devices() -> list[str] | None:
    try:
        from openvino import Core
    except ImportError:
        return None
    try:
        return list(Core().available_devices)
    except Exception as e:  # noqa: BLE001 - a plugin that fails to load is a fact about the machine
        return [f"error: {e}"]


def _git() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}
    return {"commit": commit.stdout.strip() or None, "dirty": bool(dirty.stdout.strip())}


# ============================================================================= child: fp32 / fp16 / bf16 timings
def child_precision(argv: list[str]) -> int:
    """``_precision OUT.json REPEATS BATCHES``: the image encoder and a whole request (PNG + notes) timed in fp32
    and under autocast fp16 / bf16 on the torch runtime, with the largest probability change against fp32."""
    import tempfile

    import torch

    from medmm.pipeline import Pipeline
    from medmm.tools.bench.inputs import TYPICAL_NOTES, bench_inputs

    out, repeats, batches = Path(argv[0]), int(argv[1]), [int(b) for b in argv[2].split(",")]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = Pipeline.from_checkpoint(device=device, runtime="torch")
    enc = pipe.model.image_encoder.eval()
    result: dict[str, Any] = {"device": device, "runtime": "torch (BatchNorm folded, as the pipeline runs it)",
                              "repeats": repeats, "image_encoder": {}, "request": {}}
    with tempfile.TemporaryDirectory(prefix="medmm-gpu-run-") as tmp:
        files, _ = bench_inputs(Path(tmp))
        x1 = pipe.prepare([files["png"]]).pixels[0, :1]  # [1, 3, S, S]: one real preprocessed film
        reference = _probabilities(pipe, files, TYPICAL_NOTES, None)
        dp: dict[str, float | None] = {}
        for name, dtype in (("fp32", None), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            try:
                with torch.inference_mode():
                    result["image_encoder"][name] = {
                        f"batch_{b}": _timed(lambda b=b: enc(x1.expand(b, -1, -1, -1).contiguous()), device, dtype,
                                             repeats) for b in batches}
                result["request"][name] = _timed(lambda: pipe.predict([files["png"]], TYPICAL_NOTES), device, dtype,
                                                 repeats)
                if dtype is not None:
                    got = _probabilities(pipe, files, TYPICAL_NOTES, dtype)
                    dp[name] = round(max(abs(a - b) for a, b in zip(got, reference)), 6)
            except Exception as e:  # noqa: BLE001 - a precision the device refuses is a figure too
                result["image_encoder"][name] = result["request"][name] = {"error": f"{type(e).__name__}: {e}"}
        for name, timings in result["image_encoder"].items():
            for key, t in list(timings.items()):
                if isinstance(t, dict) and t.get("p50_ms"):
                    timings[key.replace("batch_", "images_per_s_batch_")] = round(
                        int(key.split("_")[1]) * 1000.0 / t["p50_ms"], 1)
        result["max_abs_dp_vs_fp32"] = dp
        result["max_abs_dp_over"] = f"{len(files)} bench inputs x (no notes, the bench's note), every finding"
        result["accelerators"] = _accelerators(enc, x1, device, repeats)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    return 0


def _timed(fn: Callable[[], Any], device: str, dtype: Any, repeats: int) -> dict[str, float]:
    import torch

    from medmm.tools.bench.timing import summarize, time_calls

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def call() -> None:
        with torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
            fn()
        sync()

    return summarize(time_calls(call, repeats, warmup=3))


def _probabilities(pipe: Any, files: dict[str, Path], notes: str, dtype: Any) -> list[float]:
    import torch

    probs: list[float] = []
    with torch.autocast(pipe.device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
        for path in files.values():
            for n in (None, notes):
                probs += list(pipe.predict([path], n).findings.values())
    return probs


def _accelerators(enc: Any, x1: Any, device: str, repeats: int) -> dict[str, dict[str, Any]]:
    """TensorRT (torch-tensorrt, or ONNX Runtime's TensorRT provider) and OpenVINO's GPU plugin, when present."""
    import importlib.util

    out: dict[str, dict[str, Any]] = {}
    cuda = device.startswith("cuda")
    if not cuda:
        out["tensorrt"] = {"status": "skipped", "reason": "no CUDA device"}
    elif importlib.util.find_spec("torch_tensorrt") is not None:
        out["tensorrt"] = _guarded(lambda: _torch_tensorrt(enc, x1, device, repeats))
    elif "TensorrtExecutionProvider" in (_ort_providers() or []):
        out["tensorrt"] = _guarded(lambda: _onnx_timing(enc, x1, repeats, ort_provider="TensorrtExecutionProvider"))
    else:
        out["tensorrt"] = {"status": "skipped", "reason": "neither torch-tensorrt nor ONNX Runtime's "
                                                          "TensorrtExecutionProvider is installed"}
    devices = _openvino_devices()
    gpus = [d for d in devices or [] if d.startswith("GPU")]
    if not gpus:
        out["openvino_gpu"] = {"status": "skipped", "reason": f"OpenVINO devices here: {devices} (its GPU plugin "
                                                              "drives Intel GPUs, not NVIDIA)"}
    else:
        out["openvino_gpu"] = _guarded(lambda: _onnx_timing(enc, x1, repeats, openvino_device=gpus[0]))
    return out


def _guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return {"status": "ok", **fn()}
    except Exception as e:  # noqa: BLE001 - an optional accelerator that fails is reported, not fatal
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}


def _torch_tensorrt(enc: Any, x1: Any, device: str, repeats: int) -> dict[str, Any]:
    import torch
    import torch_tensorrt

    trt = torch_tensorrt.compile(enc, ir="dynamo", inputs=[x1], enabled_precisions={torch.float16})
    with torch.inference_mode():
        timing = _timed(lambda: trt(x1), device, None, repeats)
        dmax = (trt(x1).float() - enc(x1).float()).abs().max().item()
    return {"via": f"torch-tensorrt {torch_tensorrt.__version__}, fp16", "batch_1": timing,
            "max_abs_dfeature_vs_fp32": round(dmax, 6)}


def _onnx_timing(enc: Any, x1: Any, repeats: int, ort_provider: str | None = None,
                 openvino_device: str | None = None) -> dict[str, Any]:
    """The image encoder exported to ONNX (as medmm.runtime exports it) and timed on a TensorRT / OpenVINO GPU."""
    import copy
    import tempfile

    import numpy as np
    import torch

    from medmm.tools.bench.timing import summarize, time_calls

    x = x1.float().cpu()
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = str(Path(tmp) / "image_encoder.onnx")
        torch.onnx.export(copy.deepcopy(enc).float().cpu().eval(), (x,), path, input_names=["pixels"],
                          output_names=["features"], dynamic_axes={"pixels": {0: "b"}, "features": {0: "b"}},
                          opset_version=17, dynamo=False)
        feed = x.numpy()
        if ort_provider:
            import onnxruntime as ort

            sess = ort.InferenceSession(path, providers=[(ort_provider, {"trt_fp16_enable": True}),
                                                         "CUDAExecutionProvider"])
            run, via = (lambda: sess.run(None, {"pixels": feed})[0]), f"onnxruntime {ort.__version__} {ort_provider}"
        else:
            from openvino import Core

            compiled = Core().compile_model(path, openvino_device)
            run, via = (lambda: compiled(feed)[0]), f"openvino {openvino_device}"
        dmax = float(np.abs(np.asarray(run()) - enc(x1).float().cpu().numpy()).max())
        return {"via": via, "batch_1": summarize(time_calls(run, repeats, warmup=3)),
                "max_abs_dfeature_vs_fp32": round(dmax, 6)}


# ============================================================================================ child: the plan
def child_plan(argv: list[str]) -> int:
    """``_plan OUT.json BUDGET_S smoke|full``: the largest input size and fine-tuned depth whose image cache fits
    RAM and disk and whose training time, estimated from rates measured here, fits the budget."""
    import torch

    from medmm.models.encoders import ImageEncoder
    from medmm.training.cli import parse_args as train_args
    from medmm.training.data import SHARED_DATA, load_records

    out, budget_s, mode = Path(argv[0]), float(argv[1]), SMOKE if argv[2] == "smoke" else FULL
    if not SHARED_DATA.is_dir():
        out.write_text(json.dumps({"skipped": f"no training data at {SHARED_DATA} (MEDMM_SHARED_DATA)"}) + "\n")
        return 0
    config = train_args(["--recipe", "default", *mode.train_args])
    cfg = config.train
    records = load_records(cfg.sources, cfg.manifest, cfg.limit_per_source, cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.use_deterministic_algorithms(True, warn_only=True)  # as medmm.train runs
    enc = ImageEncoder(config.image_encoder, None)
    steps = _fit_steps(records, cfg, config)
    cache_limit_gb = _cache_limit_gb(out.parent)
    candidates = [(s, b) for s in mode.sizes for b in range(len(enc.stages) - 2, cfg.finetune_blocks - 1, -1)]
    n_img = sum(r.image is not None for r in records)
    image_rows = max(1, round(cfg.batch_size * n_img / len(records)))
    host_s: dict[int, float] = {}
    rows, chosen = [], None
    for size, blocks in candidates:
        with torch.no_grad():
            stem = enc.forward_stem(torch.zeros(1, 3, size, size), blocks)
        row: dict[str, Any] = {"input_size": size, "finetune_blocks": blocks,
                               "cache_gb": round(n_img * (1 + config.aug_views) * stem.numel() * 2 / 1e9, 2)}
        rows.append(row)
        if row["cache_gb"] > cache_limit_gb:
            row["verdict"] = f"rejected: image cache {row['cache_gb']} GB > {cache_limit_gb} GB"
            continue
        if size not in host_s:
            host_s[size] = _host_seconds_per_image(records, size, config.aug_views, cfg.seed)
        row["host_s_per_image"] = round(host_s[size], 4)
        row["step_s"] = round(_step_seconds(enc, stem.shape, blocks, device, image_rows), 4)
        row["estimate_s"] = round(45 + 4 * steps["fits"] + n_img * host_s[size] + row["cache_gb"]
                                  + 1.15 * steps["total"] * row["step_s"])
        if row["estimate_s"] <= 0.9 * budget_s:
            row["verdict"], chosen = "chosen", row
            break
        row["verdict"] = f"rejected: estimated {row['estimate_s']} s > 90 % of the {budget_s:.0f} s left for training"
    if chosen is None:  # nothing fits: the recipe's own depth at 224 px, stopped at the deadline if it must be
        size = 224 if not mode.smoke else mode.sizes[-1]
        chosen = {"input_size": size, "finetune_blocks": cfg.finetune_blocks, "verdict": "fallback: no candidate fits"}
    plan = {"device": device, "records": len(records), "images": n_img, "budget_s": budget_s,
            "recipe": {"folds": cfg.folds, "epochs": cfg.epochs, "loso": config.loso,
                       "loso_epochs": config.loso_epochs or cfg.epochs, "aug_views": config.aug_views,
                       "batch_size": cfg.batch_size, "finetune_blocks": cfg.finetune_blocks,
                       "input_size": cfg.input_size, "image_encoder": config.image_encoder},
            "steps": steps, "cache_limit_gb": cache_limit_gb, "candidates": rows, "chosen": chosen,
            "estimate_model": "45 s + 4 s per fit + images x host s per image (decode + views) + cache GB x 1 s/GB "
                              "(save) + 1.15 x optimiser steps x measured step s (a batch's image rows, from fp16 "
                              "stems on the host, through the trained tail under bf16 autocast, backward, AdamW)",
            "missing_options": MISSING_TRAIN_OPTIONS}
    out.write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
    return 0


def _fit_steps(records: list[Any], cfg: Any, config: Any) -> dict[str, int]:
    """Optimiser steps of the run: k CV folds, the final fit and one fit per left-out site."""
    from collections import Counter

    from medmm.sources import site

    n, bs = len(records), cfg.batch_size
    cv = cfg.folds * cfg.epochs * math.ceil(n * (cfg.folds - 1) / cfg.folds / bs) if cfg.folds >= 2 else 0
    final = cfg.epochs * math.ceil(n / bs)
    sites = Counter(site(r.source) for r in records if r.image is not None)
    per_site = Counter(site(r.source) for r in records)
    loso_epochs = config.loso_epochs or cfg.epochs
    loso = sum(loso_epochs * math.ceil((n - per_site[s]) / bs) for s in sites) if config.loso else 0
    fits = (cfg.folds if cfg.folds >= 2 else 0) + 1 + (len(sites) if config.loso else 0)
    return {"cv": cv, "final": final, "loso": loso, "total": cv + final + loso, "fits": fits}


def _cache_limit_gb(out: Path) -> float:
    """The image cache lives in RAM during training and on disk under train/cache: 40 % of the available RAM,
    50 % of the free disk, whichever is smaller."""
    ram = _meminfo_gb("MemAvailable") or 8.0
    return round(min(0.4 * ram, 0.5 * shutil.disk_usage(out).free / 1e9), 1)


def _host_seconds_per_image(records: list[Any], size: int, aug_views: int, seed: int) -> float:
    """Decode + resize + the augmented views of a few films, as the cache build does them (host side)."""
    import numpy as np
    import torch

    from medmm.config import Preprocessing
    from medmm.io import load_scan
    from medmm.models.transforms import radiograph_augment, to_model_input

    images = [r.image for r in records if r.image is not None]
    pick = np.random.default_rng(seed).choice(len(images), min(12, len(images)), replace=False)
    prep, g = Preprocessing(input_size=size), torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    for i in pick:
        x = to_model_input(load_scan(images[i]).pixels, prep)
        _ = [radiograph_augment(x, g) for _ in range(aug_views)]
    return (time.perf_counter() - t) / len(pick)


def _step_seconds(enc: Any, stem_shape: Any, blocks: int, device: str, image_rows: int) -> float:
    """One training step's image work: fp16 stems on the host -> device, the trained tail forward under bf16
    autocast (on CUDA, as medmm.train), backward and AdamW. Median of 5 after 2 warm-up steps."""
    import torch

    enc = enc.to(device).to(memory_format=torch.channels_last).eval()
    enc.requires_grad_(False)
    params = enc.tail_parameters(blocks)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4)
    pool = [torch.randn(*stem_shape[1:]).half() for _ in range(8)]  # the cache holds fp16 views on the host
    cuda = device.startswith("cuda")
    times = []
    for k in range(7):
        t = time.perf_counter()
        x = torch.stack([pool[i % 8] for i in range(image_rows)]).float().to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = enc.forward_tail(x, blocks).float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    enc.to("cpu")
    for p in params:
        p.requires_grad_(False)
    return sorted(times[2:])[len(times[2:]) // 2]


# ======================================================================================== child: training
def child_train(argv: list[str]) -> int:
    """``_train SIZE ARGS...``: ``python -m medmm.train ARGS`` with TrainConfig.input_size = SIZE (no CLI option)."""
    from dataclasses import replace

    from medmm.training import train

    size, args = int(argv[0]), argv[1:]
    parse = train.parse_args

    def with_input_size(a: list[str] | None) -> Any:
        config = parse(a)
        return replace(config, train=replace(config.train, input_size=size))

    train.parse_args = with_input_size  # main() reads its options through this module attribute
    return train.main(args)


CHILDREN: dict[str, Callable[[list[str]], int]] = {
    "_machine": child_machine, "_precision": child_precision, "_plan": child_plan, "_train": child_train}


if __name__ == "__main__":
    raise SystemExit(main())
