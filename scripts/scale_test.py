"""Load test of ``medmm serve`` and batch scoring on Ray (issue 27; docs/scale.md). A benchmark, not a unit test.

One local Ray cluster, one run, so the ratios compare like with like:

1. ``/predict_json`` (one film + notes + drafted report) through gradio_client from ``--users`` concurrent clients,
   ``--requests`` requests each configuration: 1 model replica, then 2 (throughput, p50/p95, errors).
2. With 2 replicas under the same load, one replica's process is killed (SIGKILL) part-way: every request either
   succeeds or fails visibly to its client (counted), and Serve brings the replica back (time to 2 RUNNING).
3. The Serve hop: the same request through the deployment handle, minus the latency the replica measured itself.
4. Batch scoring (``predict --manifest --engine ray``): rows/s with 1 and 2 actors, start-up included.

    .venv/bin/python scripts/scale_test.py --out docs/scale.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from medmm.training.data import SHARED_DATA  # noqa: E402  ($MEDMM_SHARED_DATA, else ../shared/data)

ROOT = Path(__file__).resolve().parents[1]
FILM = ROOT / "assets" / "examples" / "02_child_bacterial_pneumonia.jpeg"
NOTES = "Child, 4 years. Fever, productive cough."
FILMS = SHARED_DATA / "kermany224" / "train"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 3)


def load(url: str, users: int, requests: int, during=None) -> dict:
    """``requests`` /predict_json calls from ``users`` clients; ``during(done_count)`` runs in a side thread."""
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(users)]
    latencies, errors, lock, done = [], [], threading.Lock(), [0]

    def one(i: int) -> None:
        t0 = time.perf_counter()
        try:
            out = clients[i % users].predict(files=[handle_file(str(FILM))], notes=NOTES, api_name="/predict_json")
            assert out["status"] == "ok" and out["findings"]
            with lock:
                latencies.append(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - a failure the client saw: counted, never lost
            with lock:
                errors.append(type(exc).__name__)
        with lock:
            done[0] += 1

    side = threading.Thread(target=during, args=(done,), daemon=True) if during else None
    t0 = time.perf_counter()
    if side:
        side.start()
    with concurrent.futures.ThreadPoolExecutor(users) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t0
    if side:
        side.join(timeout=120)
    return {"users": users, "requests": requests, "ok": len(latencies), "errors": len(errors),
            "error_types": sorted(set(errors)), "wall_s": round(wall, 2),
            "throughput_rps": round(len(latencies) / wall, 3), "p50_s": _pct(latencies, 0.5),
            "p95_s": _pct(latencies, 0.95)}


def handle_load(handle, users: int, requests: int) -> dict:
    """The same request straight to the model deployment (no gradio, no HTTP): what the replicas alone sustain."""
    blob = [FILM.read_bytes()]
    latencies: list[float] = []

    def one(_: int) -> None:
        t0 = time.perf_counter()
        handle.run.remote(blob, NOTES, {}).result()
        latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(users) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t0
    return {"users": users, "requests": requests, "throughput_rps": round(requests / wall, 3),
            "p50_s": _pct(latencies, 0.5), "p95_s": _pct(latencies, 0.95)}


def deploy(replicas: int, port: int) -> str:
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.scale.serve import ServeOptions, start

    return start(ServeOptions(checkpoint=str(DEFAULT_CHECKPOINT), replicas=replicas, port=port), blocking=False)


def replica_pids(handle, tries: int = 30) -> set[int]:
    return {handle.stats.remote().result()["pid"] for _ in range(tries)}


def running_replicas() -> int:
    from ray import serve

    status = serve.status().applications["medmm"].deployments["MedmmModel"]
    return int(status.replica_states.get("RUNNING", 0))


def serve_hop(handle, n: int = 10) -> dict:
    """Round trip through the handle minus the replica's own latency: pickling the scan and the RequestResult, the
    router, the actor call (the HTTP ingress adds gradio's queue and upload on top, seen in the load figures)."""
    blob = [FILM.read_bytes()]
    hops, inside = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        result = handle.run.remote(blob, NOTES, {}).result()
        total = time.perf_counter() - t0
        hops.append(total - result.latency_s)
        inside.append(result.latency_s)
    return {"requests": n, "hop_ms_median": round(1000 * statistics.median(hops), 1),
            "hop_ms_p95": round(1000 * (_pct(hops, 0.95) or 0), 1),
            "replica_latency_s_median": round(statistics.median(inside), 3)}


def replica_memory_mb(pids: set[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            rss = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
            out[pid] = round(int(rss.split()[1]) / 1024, 1)
        except (OSError, StopIteration):
            pass
    return out


def batch_rate(n_films: int, workers: int) -> dict:
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.scale.batch import run_manifest

    films = sorted(FILMS.glob("*/*.jpeg"))[:n_films] if FILMS.is_dir() else [FILM] * n_films
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "m.csv"
        with manifest.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "notes"])
            w.writerows([[str(p), ""] for p in films])
        return run_manifest(manifest, Path(tmp) / "out.csv", str(DEFAULT_CHECKPOINT), None, workers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--films", type=int, default=60, help="films for the batch-scoring rate")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import ray
    from ray import serve

    ray.init(num_cpus=max(3, os.cpu_count() or 1), include_dashboard=False, logging_level="WARNING")
    report: dict = {"cpus": os.cpu_count(), "load": {}}
    for replicas in (1, 2):
        url = deploy(replicas, args.port)
        handle = serve.get_deployment_handle("MedmmModel", app_name="medmm")
        load(url, args.users, args.users)                       # warm-up: every client and replica once
        report["load"][f"{replicas}_replicas"] = load(url, args.users, args.requests)
        report["load"][f"{replicas}_replicas"]["replica_rss_mb"] = replica_memory_mb(replica_pids(handle))
        handle_load(handle, args.users, args.users)             # warm-up
        report["load"][f"{replicas}_replicas"]["model_only"] = handle_load(handle, args.users, args.requests)
        if replicas == 1:
            report["serve_hop"] = serve_hop(handle)
    one, two = report["load"]["1_replicas"], report["load"]["2_replicas"]
    report["ratio_2_to_1"] = {"throughput": round(two["throughput_rps"] / one["throughput_rps"], 2),
                              "p95": round(two["p95_s"] / one["p95_s"], 2),
                              "model_only_throughput": round(two["model_only"]["throughput_rps"]
                                                             / one["model_only"]["throughput_rps"], 2)}

    handle = serve.get_deployment_handle("MedmmModel", app_name="medmm")
    before = replica_pids(handle)
    victim = sorted(before)[0]
    killed: dict = {"replica_pids_before": sorted(before)}

    def kill_midway(done: list[int]) -> None:
        while done[0] < args.requests // 3:
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)
        t0 = time.perf_counter()
        killed["at_request"] = done[0]
        while time.perf_counter() - t0 < 180:      # back: 2 RUNNING and the dead pid no longer answers
            time.sleep(0.5)
            if running_replicas() == 2 and victim not in (pids := replica_pids(handle, 10)) and len(pids) == 2:
                break
        killed["back_to_2_running_s"] = round(time.perf_counter() - t0, 1)

    report["replica_kill"] = {**load(url, args.users, args.requests, during=kill_midway), **killed,
                              "replicas_running_after": running_replicas(),
                              "replica_pids_after": sorted(replica_pids(handle)), "killed_pid": victim}
    serve.shutdown()
    report["batch"] = {f"{w}_workers": batch_rate(args.films, w) for w in (1, 2)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
