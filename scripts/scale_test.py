"""Load test of ``medmm serve`` and batch scoring on Ray (issue 27; docs/scale.md). A benchmark, not a unit test.

``--part load`` (default): one local Ray cluster, one run, so the ratios compare like with like:

1. ``/predict_json`` (one film + notes + drafted report) through gradio_client from ``--users`` concurrent clients,
   ``--requests`` requests each configuration: 1 model replica, then 2 (throughput, p50/p95, errors). Each client
   sends its own film and notes, and every answer is checked against that client's single-user reference (the same
   request sent alone first): findings to 1e-6, the draft report's text equal; a difference is a mismatch (cross-talk).
2. With 2 replicas under the same load, one replica's process is killed (SIGKILL) part-way: every request either
   succeeds or fails visibly to its client (counted), and Serve brings the replica back (time to 2 RUNNING).
3. The Serve hop: the same request through the deployment handle, minus the latency the replica measured itself.
4. Batch scoring (``predict --manifest --engine ray``): rows/s with 1 and 2 actors, start-up included.

``--part crosstalk``: item 1 alone with 2 replicas (e.g. ``--users 16``). ``--part equality``: a ``--films``-film
manifest drawn across ../shared with a fixed seed (plus notes-only and bad rows) scored by ``predict --manifest``
with ``--engine local`` and ``--engine ray --workers 2`` (CSV, then Parquet): the CSVs byte-identical, the Parquet rows
the CSV's. With ``--out``, a part's result is merged into that JSON file under its key.

    .venv/bin/python scripts/scale_test.py --out docs/scale.json
    .venv/bin/python scripts/scale_test.py --part crosstalk --users 16 --requests 96 --out docs/scale.json
    .venv/bin/python scripts/scale_test.py --part equality --films 2000 --out docs/scale.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import random
import signal
import subprocess
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
SEED = 27
TOLERANCE = 1e-6
NOTES_BANK = ("Child, 4 years. Fever, productive cough.", "Adult, 67 years. Shortness of breath, no fever.",
              "Cough for 3 weeks, night sweats, weight loss.", "Post-operative day 2, desaturation, crackles right base.",
              "Routine pre-operative film. No symptoms.", "Fever 39.2 C, pleuritic chest pain on the left.",
              "Known heart failure, worsening leg oedema and orthopnoea.", "Trauma, left chest wall pain.")


def shared_films(n: int, seed: int = SEED) -> list[tuple[Path, str]]:
    """``n`` films drawn across ../shared (Kermany, NIH adult and sample, the COVID collection with its clinical notes,
    the DICOM files) with a fixed seed: ``(path, notes)``; ``[FILM]`` repeated when ../shared is absent."""
    pool: list[tuple[Path, str]] = []
    pool += [(p, "") for p in sorted((SHARED_DATA / "kermany224" / "train").glob("*/*.jpeg"))]
    for name in ("nih_adult", "nih_sample"):
        pool += [(SHARED_DATA / name / "images" / r["image"], "") for r in _rows(SHARED_DATA / name / "metadata.csv")]
    pool += [(SHARED_DATA / "covid_notes" / "images" / r["image"], r.get("clinical_notes") or "")
             for r in _rows(SHARED_DATA / "covid_notes" / "metadata.csv")]
    pool += [(p, "") for p in sorted((SHARED_DATA / "dicom").glob("*.dcm"))]
    pool = [(p, notes) for p, notes in pool if p.is_file()]
    if not pool:
        return [(FILM, NOTES)] * n
    return random.Random(seed).sample(pool, min(n, len(pool)))


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def client_cases(users: int) -> list[tuple[Path, str]]:
    """One film and one note per client, all different (so an answer given to the wrong client shows)."""
    films = shared_films(users, seed=SEED + 1)
    return [(film, f"{NOTES_BANK[i % len(NOTES_BANK)]} Client {i}.") for i, (film, _) in enumerate(films)]


def _same_answer(got: dict, ref: dict) -> bool:
    return (got["status"] == ref["status"] and got["report"] == ref["report"]
            and set(got["findings"]) == set(ref["findings"])
            and all(abs(got["findings"][k] - ref["findings"][k]) <= TOLERANCE for k in ref["findings"]))


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 3)


def references(url: str, cases: list[tuple[Path, str]]) -> list[dict]:
    """Each client's request sent alone, one after another: what that client must get under load too."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    return [client.predict(files=[handle_file(str(film))], notes=notes, api_name="/predict_json")
            for film, notes in cases]


def load(url: str, users: int, requests: int, cases: list[tuple[Path, str]], refs: list[dict], during=None) -> dict:
    """``requests`` /predict_json calls from ``users`` clients (client ``i`` sends ``cases[i]``; request ``k`` goes
    to client ``k % users``); every answer is compared with ``refs[i]``. ``during(done_count)`` runs in a side thread."""
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(users)]
    latencies, errors, mismatches, lock, done = [], [], [], threading.Lock(), [0]

    def one(k: int) -> None:
        i = k % users
        film, notes = cases[i]
        t0 = time.perf_counter()
        try:
            out = clients[i].predict(files=[handle_file(str(film))], notes=notes, api_name="/predict_json")
            with lock:
                latencies.append(time.perf_counter() - t0)
                if not _same_answer(out, refs[i]):
                    mismatches.append(i)
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
            "error_types": sorted(set(errors)), "mismatches": len(mismatches),
            "mismatched_clients": sorted(set(mismatches)), "wall_s": round(wall, 2),
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


def equality_manifest(path: Path, n_films: int) -> dict:
    """``n_films`` films across ../shared (seeded; the COVID films with their clinical notes) plus notes-only rows
    (Indiana reports' indications) and bad rows (missing file, a text file, a folder, an empty row, a quoted
    multi-line note), the extra rows at seeded places so they fall in different blocks."""
    rng = random.Random(SEED)
    rows = [{"image": str(p), "notes": notes} for p, notes in shared_films(n_films)]
    indications = [r["indication"] for r in _rows(SHARED_DATA / "iu_reports" / "indiana_reports.csv")
                   if (r.get("indication") or "").strip()]
    extra = [{"image": "", "notes": text} for text in rng.sample(indications, min(10, len(indications)))]
    extra += [{"image": "missing/film.png", "notes": "cough"}, {"image": str(ROOT / "README.md"), "notes": "x"},
              {"image": str(ROOT / "assets"), "notes": ""}, {"image": "", "notes": ""},
              {"image": str(FILM), "notes": 'Line one,\n"quoted" line two'}]
    for row in extra:
        rows.insert(rng.randrange(len(rows) + 1), row)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "notes"])
        writer.writeheader()
        writer.writerows(rows)
    return {"rows": len(rows), "films": n_films,
            "films_with_notes": sum(1 for r in rows if r["image"] and r["notes"]) - 3,   # less the 3 odd rows below
            "notes_only_rows": len(extra) - 5,
            "odd_rows": "missing file, a text file, a folder, an empty row, a film with a quoted multi-line note"}


def _predict(manifest: Path, out: Path, *extra: str) -> dict:
    command = [sys.executable, "-m", "medmm", "predict", "--manifest", str(manifest), "--out", str(out),
               "--runtime", "torch", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return {"command": "python " + " ".join(command[1:]).replace(str(manifest.parent) + "/", ""),
            "seconds": round(seconds, 1), "load_avg_after": [round(x, 2) for x in os.getloadavg()]}


def equality(n_films: int, workers: int, block_rows: int | None) -> dict:
    """``--engine local`` vs ``--engine ray --workers N`` on the same manifest: CSV bytes, Parquet rows."""
    import pyarrow.parquet as pq

    extra = ("--block-rows", str(block_rows)) if block_rows else ()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        result: dict = {"manifest": equality_manifest(manifest, n_films), "seed": SEED,
                        "load_avg_before": [round(x, 2) for x in os.getloadavg()]}
        local, ray_csv, ray_parquet = (Path(tmp) / n for n in ("local.csv", "ray.csv", "ray.parquet"))
        result["local"] = _predict(manifest, local)
        result["ray_csv"] = _predict(manifest, ray_csv, "--engine", "ray", "--workers", str(workers), *extra)
        result["ray_parquet"] = _predict(manifest, ray_parquet, "--engine", "ray", "--workers", str(workers), *extra)
        a, b = local.read_bytes(), ray_csv.read_bytes()
        local_rows = list(csv.DictReader(local.open(newline="", encoding="utf-8")))
        ray_rows = list(csv.DictReader(ray_csv.open(newline="", encoding="utf-8")))
        result["csv_identical"] = a == b
        result["csv_bytes"] = len(a)
        result["differing_rows"] = sum(1 for x, y in zip(local_rows, ray_rows) if x != y) + abs(len(local_rows) - len(ray_rows))
        result["parquet_rows_equal"] = pq.read_table(ray_parquet).to_pylist() == local_rows
        statuses: dict[str, int] = {}
        for row in local_rows:
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        result["output_rows"], result["status_counts"] = len(local_rows), statuses
        result["rows_with_warnings"] = sum(1 for r in local_rows if r["warnings"])
        for key in ("local", "ray_csv", "ray_parquet"):
            result[key]["rows_per_s"] = round(len(local_rows) / result[key]["seconds"], 2)
    return result


def crosstalk(url: str, users: int, requests: int) -> dict:
    cases = client_cases(users)
    refs = references(url, cases)
    load(url, users, users, cases, refs)                        # warm-up: every client once
    return {**load(url, users, requests, cases, refs), "distinct_films": len({str(f) for f, _ in cases}),
            "distinct_findings": len({json.dumps(r["findings"], sort_keys=True) for r in refs})}


def _write(out: str | None, key: str | None, value: dict) -> None:
    """The whole report (``key`` None), or one part merged into the JSON file already there."""
    text = json.dumps(value, indent=2)
    print(text)
    if not out:
        return
    path = Path(out)
    if key is not None:
        merged = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        merged[key] = value
        text = json.dumps(merged, indent=2)
    path.write_text(text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("load", "crosstalk", "equality"), default="load")
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--films", type=int, default=60, help="films for the batch-scoring rate / the equality manifest")
    ap.add_argument("--workers", type=int, default=2, help="--part equality: Ray Data actors")
    ap.add_argument("--block-rows", type=int, default=None, help="--part equality: rows per block (default: medmm's)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.part == "equality":
        _write(args.out, "ray_data_equality", {"command": " ".join(["scripts/scale_test.py", *(argv or sys.argv[1:])]),
                                               **equality(args.films, args.workers, args.block_rows)})
        return 0
    import ray
    from ray import serve

    ray.init(num_cpus=max(3, os.cpu_count() or 1), include_dashboard=False, logging_level="WARNING")
    if args.part == "crosstalk":
        load_before = [round(x, 2) for x in os.getloadavg()]
        url = deploy(2, args.port)
        result = {"command": " ".join(["scripts/scale_test.py", *(argv or sys.argv[1:])]), "replicas": 2,
                  "load_avg_before": load_before, **crosstalk(url, args.users, args.requests),
                  "load_avg_after": [round(x, 2) for x in os.getloadavg()]}
        serve.shutdown()
        _write(args.out, "crosstalk_2_replicas", result)
        return 0
    report: dict = {"cpus": os.cpu_count(), "load": {}}
    cases = client_cases(args.users)
    for replicas in (1, 2):
        url = deploy(replicas, args.port)
        handle = serve.get_deployment_handle("MedmmModel", app_name="medmm")
        refs = references(url, cases)
        load(url, args.users, args.users, cases, refs)          # warm-up: every client and replica once
        report["load"][f"{replicas}_replicas"] = load(url, args.users, args.requests, cases, refs)
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

    report["replica_kill"] = {**load(url, args.users, args.requests, cases, refs, during=kill_midway), **killed,
                              "replicas_running_after": running_replicas(),
                              "replica_pids_after": sorted(replica_pids(handle)), "killed_pid": victim}
    serve.shutdown()
    report["batch"] = {f"{w}_workers": batch_rate(args.films, w) for w in (1, 2)}
    _write(args.out, None, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
