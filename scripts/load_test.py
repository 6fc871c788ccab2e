#!/usr/bin/env python
"""Load test of the Gradio app's ``/predict`` endpoint: concurrent users, answer isolation, latency, memory.

What it checks, and why:

* N concurrent users (own client each: ``--client browser``, the default, makes the HTTP requests a browser tab
  makes, see ``BrowserClient``; ``--client gradio`` uses ``gradio_client``, which costs this process as much CPU as
  the server's work) send DIFFERENT scans (distinct real radiographs from
  ../shared/data/kermany224, else generated images with distinct content), each request's notes carrying a unique
  token. Every response must belong to its own request: its findings must equal a single-user reference prediction
  for the same (scan, notes) computed in-process with the same checkpoint (to ``--atol``, default 1e-5), and, when
  the response carries text, the unique token must be echoed (the report's Indication) and no other request's token
  may appear. A shared-state bug (e.g. a cache keyed wrongly, a global "last image") shows up as a mismatch.
* no request errors; p50/p95 latency and throughput under load;
* memory: the server's RSS (``/proc/PID/status``) is sampled while a few hundred requests run; the slope
  (MB per 100 requests, least squares over the second half of the samples) must stay under ``--rss-slope-mb`` (20).

The app is started from ``app.py`` on a free localhost port (``GRADIO_SERVER_NAME=127.0.0.1``,
``GRADIO_SERVER_PORT``) unless ``--url`` is given (then memory is sampled only with ``--server-pid``). The
``/predict`` signature is discovered with ``Client.view_api()``: file/image parameters get the scan, the first
text parameter gets the notes, others their defaults. Prints one JSON object; exit status 1 when a check fails.

    .venv/bin/python scripts/load_test.py                       # 8 users, 300 requests (or 300 s), JSON out
    .venv/bin/python scripts/load_test.py --users 4 --requests 40 --seconds 120
    .venv/bin/python scripts/load_test.py --url http://127.0.0.1:7860 --server-pid 1234
    .venv/bin/python scripts/load_test.py --users 16 --requests 120 --compare-batching   # off vs on, one run
    .venv/bin/python scripts/load_test.py --soak --batching on                           # >= 1000 requests
    .venv/bin/python scripts/load_test.py --users 16 --requests 96 --compare-concurrency 1,2  # queue concurrency

``--compare-batching`` starts two servers one after the other (``MEDMM_BATCHING=0`` then ``1``, the same
``MEDMM_QUEUE_CONCURRENCY``, default 4) and sends both the same plan; ``comparison`` holds throughput and p50/p95
side by side, with the cross-talk checks of each. ``--soak`` sends at least 1000 requests and reports the RSS slope
(``soak``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmm.training.data import SHARED_DATA  # honours MEDMM_SHARED_DATA

REPO = Path(__file__).resolve().parents[1]   # app.py lives here

log = logging.getLogger("load_test")

FILE_COMPONENTS = {"image", "file", "files", "uploadbutton", "imageeditor", "imageslider"}
TEXT_COMPONENTS = {"textbox", "textarea", "text"}


# ============================================================================================ server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(app: Path, port: int, log_path: Path, timeout_s: float,
              extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``app.py`` bound to 127.0.0.1:port and wait until it answers HTTP (or raise with its log tail)."""
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **(extra_env or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    logf = open(log_path, "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, str(app)], cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode} before serving; log tail:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - localhost only
                if r.status < 500:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"app did not answer on {url} within {timeout_s:.0f} s; log tail:\n{_tail(log_path)}")


def stop_app(proc: subprocess.Popen) -> None:
    """Terminate the server we started (by its pid only)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` plus its children (a server may fork workers), MB; None if unreadable."""
    try:
        import psutil

        p = psutil.Process(pid)
        return round(sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20, 1)
    except Exception:  # noqa: BLE001 - psutil missing or process gone: fall back to /proc
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by ``pid`` and its children (``/proc/PID/stat``); None if unreadable."""
    if not pid:
        return None
    try:
        import psutil

        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
        return sum(sum(q.cpu_times()[:2]) for q in procs)
    except Exception:  # noqa: BLE001
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None


def own_cpu_seconds() -> float:
    """CPU seconds of this process (the load-test clients' threads), user + system."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ============================================================================================ inputs
def scan_files(n: int, workdir: Path, seed: int = 0) -> list[Path]:
    """``n`` different scans: real Kermany JPEGs (alternating NORMAL/PNEUMONIA) when present, else generated PNGs."""
    root = SHARED_DATA / "kermany224" / "train"
    normal = sorted((root / "NORMAL").glob("*.jpeg")) if root.exists() else []
    pneu = sorted((root / "PNEUMONIA").glob("*.jpeg")) if root.exists() else []
    if normal and pneu:
        rng = random.Random(seed)
        picks = rng.sample(normal, min(len(normal), (n + 1) // 2)) + rng.sample(pneu, min(len(pneu), n // 2))
        if len(picks) >= n:
            return picks[:n]
    import numpy as np
    from PIL import Image

    out = []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        yy, xx = np.mgrid[0:256, 0:256] / 256
        img = 0.5 + 0.3 * np.sin((3 + i % 5) * xx + i) * np.cos((2 + i % 3) * yy) + rng.normal(0, 0.05, xx.shape)
        path = workdir / f"generated_{i:03d}.png"
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
        out.append(path)
    return out


def unique_token(i: int, rng: random.Random) -> str:
    """Letters only (the report's identifier scrubber leaves words alone, not long numbers)."""
    return "tok" + "".join(rng.choice(string.ascii_lowercase) for _ in range(8)) + _alpha(i)


def _alpha(i: int) -> str:
    s = ""
    while True:
        s = chr(ord("a") + i % 26) + s
        i = i // 26 - 1
        if i < 0:
            return s


def notes_for(token: str) -> str:
    return f"Cough and fever for three days, crackles at the right base. Reference {token}."


# ============================================================================================ API discovery
@dataclass
class Endpoint:
    api_name: str
    params: list[dict[str, Any]]
    returns: list[dict[str, Any]]

    def build_args(self, scan: Path, notes: str) -> list[Any]:
        """Positional arguments for ``Client.predict``: scan into file params, notes into the first text param."""
        from gradio_client import handle_file

        args: list[Any] = []
        text_done = False
        for p in self.params:
            comp = str(p.get("component", "")).lower()
            label = str(p.get("label") or p.get("parameter_name") or "").lower()
            if comp in FILE_COMPONENTS or _is_file_type(p):
                wants_list = comp == "files" or "list" in json.dumps(p.get("type", {})).lower()
                args.append([handle_file(str(scan))] if wants_list else handle_file(str(scan)))
            elif (comp in TEXT_COMPONENTS or label.startswith("notes")) and not text_done:
                args.append(notes)
                text_done = True
            elif p.get("parameter_has_default"):
                args.append(p.get("parameter_default"))
            else:
                args.append(None)
        if not text_done:
            raise RuntimeError(f"{self.api_name}: no text parameter for the notes in {self.params}")
        return args


def _is_file_type(p: dict[str, Any]) -> bool:
    t = json.dumps(p.get("python_type", {})).lower() + json.dumps(p.get("type", {})).lower()
    return "filepath" in t or "filedata" in t


def discover(client: Any, api_name: str) -> Endpoint:
    info = client.view_api(print_info=False, return_format="dict")
    named = info.get("named_endpoints", {})
    if api_name not in named:
        raise RuntimeError(f"the app has no {api_name} endpoint; it has: {sorted(named)}")
    ep = named[api_name]
    return Endpoint(api_name, list(ep.get("parameters", [])), list(ep.get("returns", [])))


# ============================================================================================ a browser's requests
class BrowserClient:
    """One user as a browser tab loads the server for an analysis, over Gradio's HTTP API (``httpx``): upload the
    scan (``/gradio_api/upload``), call the endpoint (``/gradio_api/call/<api>``), read its event stream, then fetch
    the images the page shows. The download buttons' files are fetched only when a user clicks them, so not here,
    except the result JSON, which the load test reads to compare findings at full precision (the one fetch a browser
    would not make). Files not fetched leave their names only, so that no check reads the server's own copy.

    Why: ``gradio_client`` (``--client gradio``) costs ~0.2-0.3 CPU-s per request in this process (it polls,
    downloads every output file, and builds its API view per client) - as much as the server's work, on the same two
    cores; real users' browsers run elsewhere. Same ``predict(*args, api_name=...)`` as ``gradio_client.Client``.
    """

    def __init__(self, url: str, endpoint: Endpoint, folder: Path) -> None:
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=600.0)
        self.kinds = [str(r.get("component", "")).lower() for r in endpoint.returns]
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _upload(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._upload(v) for v in value]
        if isinstance(value, dict) and value.get("meta", {}).get("_type") == "gradio.FileData":
            path = Path(value["path"])
            r = self.http.post("/gradio_api/upload", files=[("files", (path.name, path.read_bytes()))])
            r.raise_for_status()
            return {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
        return value

    def _fetch(self, value: Any, kind: str) -> Any:
        if not (isinstance(value, dict) and value.get("url")):
            return value
        name = str(value.get("orig_name") or Path(str(value.get("path", "file"))).name)
        if kind != "image" and not name.endswith(".json"):
            return name                         # a download a user has not clicked: not fetched
        r = self.http.get(value["url"])
        r.raise_for_status()
        local = Path(tempfile.mkstemp(prefix="out-", suffix="-" + name[-60:], dir=self.folder)[1])
        local.write_bytes(r.content)
        return str(local)

    def predict(self, *args: Any, api_name: str) -> list[Any]:
        name = api_name.lstrip("/")
        r = self.http.post(f"/gradio_api/call/{name}", json={"data": [self._upload(a) for a in args]})
        r.raise_for_status()
        event_id = r.json()["event_id"]
        event, out = None, None
        with self.http.stream("GET", f"/gradio_api/call/{name}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(f"the app answered with an error: {line[5:].strip()[:300]}")
                    out = json.loads(line[5:])
                    break
        if out is None:
            raise RuntimeError("the event stream ended without a result")
        return [self._fetch(v, kind) for v, kind in zip(out, self.kinds)]

    def close(self) -> None:
        self.http.close()


# ============================================================================================ response parsing
def extract_findings(obj: Any, findings: set[str]) -> tuple[dict[str, float], bool] | None:
    """The findings->probability mapping in a response, preferring full precision.

    Looks everywhere: dicts keyed by finding names, a ``gr.Label`` payload (``confidences``), JSON strings, and
    downloaded ``.json`` files (the app's result export). A mapping found under a ``"findings"`` key (the
    ``RequestResult.to_json()`` payload) wins over display values, which apps round. Returns
    ``(mapping, exact)``; ``exact`` is False when only display values were found.
    """
    candidates: list[tuple[dict[str, float], bool]] = []

    def walk(o: Any, under_findings: bool = False, depth: int = 0) -> None:
        if depth > 12:
            return
        if isinstance(o, dict):
            if "confidences" in o and isinstance(o["confidences"], list):
                got = {c.get("label"): c.get("confidence") for c in o["confidences"] if isinstance(c, dict)}
                if findings <= set(got):
                    candidates.append(({k: float(got[k]) for k in findings}, False))
            numeric = {k: v for k, v in o.items() if k in findings and isinstance(v, (int, float))}
            if len(numeric) == len(findings):
                candidates.append(({k: float(v) for k, v in numeric.items()}, under_findings))
            for k, v in o.items():
                walk(v, k == "findings", depth + 1)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v, False, depth + 1)
        elif isinstance(o, str):
            s = o.strip()
            if s[:1] in "{[":
                try:
                    walk(json.loads(s), under_findings, depth + 1)
                except ValueError:
                    pass
            elif s.endswith(".json") and len(s) < 4096 and Path(s).is_file():
                try:
                    walk(json.loads(Path(s).read_text()), False, depth + 1)
                except (OSError, ValueError):
                    pass

    walk(obj)
    if not candidates:
        return None
    exact = [c for c in candidates if c[1]]
    return exact[0] if exact else candidates[0]


def display_tolerance(values: dict[str, float]) -> float:
    """Half a unit in the last decimal the values show (e.g. 5e-5 for 4-decimal display rounding)."""
    for d in range(1, 7):
        if all(abs(v - round(v, d)) < 1e-12 for v in values.values()):
            return 0.5 * 10 ** -d + 1e-9
    return 0.0


def all_text(obj: Any, limit: int = 2_000_000) -> str:
    """Every string in a response (and small text files it points to), for token checks."""
    parts: list[str] = []

    def walk(o: Any) -> None:
        if sum(map(len, parts)) > limit:
            return
        if isinstance(o, str):
            parts.append(o)
            if len(o) < 4096 and o.endswith((".txt", ".md", ".json", ".html")) and Path(o).is_file():
                try:
                    parts.append(Path(o).read_text(errors="replace")[:200_000])
                except OSError:
                    pass
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(obj)
    return "\n".join(parts)


# ============================================================================================ load
@dataclass
class Outcome:
    index: int
    user: int
    latency_s: float
    ok: bool
    error: str = ""
    findings_max_diff: float | None = None
    token_echoed: bool | None = None
    foreign_tokens: list[str] = field(default_factory=list)
    exact: bool | None = None  # findings compared at full precision (else display-rounded values)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def slope_per_100(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of RSS (MB) against completed requests, scaled to MB per 100 requests."""
    if len(points) < 3:
        return None
    xs, ys = zip(*points)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def run(args: argparse.Namespace, extra_env: dict[str, str] | None = None,
        cached_reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """One load run against one server (started with ``extra_env`` on top of this environment).

    ``cached_reference``: a dict shared between runs of the same plan (``--compare-batching``), so the in-process
    reference predictions are computed once."""
    from gradio_client import Client

    result: dict[str, Any] = {"users": args.users, "client": args.client, "requests_target": args.requests,
                              "seconds_limit": args.seconds,
                              "server_env": dict(extra_env or {})}
    failures: list[str] = []
    tmp = tempfile.TemporaryDirectory(prefix="medmm-load-")
    workdir = Path(tmp.name)
    # gradio_client makes a folder per downloaded file under the system temp dir and never removes it (a soak
    # left ~10,000 empty folders in /tmp): point this process's temp dir into the run's folder, removed at the end
    (workdir / "tmp").mkdir()
    tempfile.tempdir, old_tempdir = str(workdir / "tmp"), tempfile.tempdir
    proc = None
    try:
        n_scans = max(args.users * 2, min(args.scans, max(args.requests, 1)))
        scans = scan_files(n_scans, workdir, args.seed)
        result["scans"] = {"count": len(scans), "source": "kermany224" if "kermany" in str(scans[0]) else "generated"}
        rng = random.Random(args.seed)
        total = args.requests + args.users  # + one warm-up request per user
        plan = [(scans[i % len(scans)], unique_token(i, rng)) for i in range(total)]
        # rotate notes against scans so that two requests never share both
        reference: dict[int, dict[str, float]] = {}
        if not args.no_reference:
            if cached_reference is not None and "ref" in cached_reference:
                reference, findings_names = cached_reference["ref"], cached_reference["names"]
            else:
                reference, findings_names = reference_predictions(plan, args.checkpoint)
                if cached_reference is not None:
                    cached_reference.update(ref=reference, names=findings_names)
        else:
            findings_names = set()

        pid = args.server_pid
        if args.url:
            url = args.url
        else:
            port = free_port()
            server_log = workdir / "server.log"
            t = time.perf_counter()
            proc = start_app(REPO / args.app, port, server_log, args.startup_timeout, extra_env)
            result["server_startup_s"] = round(time.perf_counter() - t, 2)
            url, pid = f"http://127.0.0.1:{port}/", proc.pid
        result["url"] = url

        probe = Client(url, verbose=False, download_files=str(workdir / "downloads"))
        endpoint = discover(probe, args.api_name)
        result["endpoint"] = {"api_name": endpoint.api_name,
                              "parameters": [f"{p.get('label') or p.get('parameter_name')}:{p.get('component')}"
                                             for p in endpoint.params],
                              "returns": [f"{r.get('label')}:{r.get('component')}" for r in endpoint.returns]}

        outcomes: list[Outcome] = []
        lock = threading.Lock()
        next_index = iter(range(args.users, total))
        rss_points: list[tuple[float, float]] = []
        done_count = [0]
        stop = threading.Event()
        deadline = [math.inf]
        tokens = [tok for _, tok in plan]

        def one(client: Any, i: int, user: int) -> Outcome:
            scan, tok = plan[i]
            t0 = time.perf_counter()
            try:
                resp = client.predict(*endpoint.build_args(scan, notes_for(tok)), api_name=endpoint.api_name)
            except Exception as e:  # noqa: BLE001 - every failure is recorded, none stops the run
                return Outcome(i, user, time.perf_counter() - t0, False, f"{type(e).__name__}: {str(e)[:300]}")
            out = Outcome(i, user, time.perf_counter() - t0, True)
            text = all_text(resp)
            if text:
                out.token_echoed = tok in text
                # only tokens of requests that were in flight could leak; search a window around i
                out.foreign_tokens = [t for t in tokens[max(0, i - 4 * args.users): i + 4 * args.users]
                                      if t != tok and t in text]
            if reference:
                found = extract_findings(resp, findings_names)
                if found is None:
                    out.ok, out.error = False, "no findings mapping found in the response"
                else:
                    got, exact = found
                    diff = max(abs(got[f] - reference[i][f]) for f in findings_names)
                    # display-rounded values: compare beyond their rounding only
                    out.findings_max_diff = diff if exact else max(0.0, diff - display_tolerance(got))
                    out.exact = exact
            return out

        def user_loop(user: int) -> None:
            try:
                client = (BrowserClient(url, endpoint, workdir / "downloads" / str(user)) if args.client == "browser"
                          else Client(url, verbose=False, download_files=str(workdir / "downloads")))
            except Exception as e:  # noqa: BLE001
                with lock:
                    outcomes.append(Outcome(user, user, 0.0, False, f"client: {type(e).__name__}: {e}"))
                barrier.wait()
                return
            warm = one(client, user, user)  # warm-up request: not in the latency figures
            with lock:
                outcomes.append(warm)
            barrier.wait()
            while not stop.is_set() and time.monotonic() < deadline[0]:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                o = one(client, i, user)
                with lock:
                    outcomes.append(o)
                    done_count[0] += 1

        barrier = threading.Barrier(args.users + 1)
        threads = [threading.Thread(target=user_loop, args=(u,), daemon=True) for u in range(args.users)]
        for th in threads:
            th.start()
        barrier.wait(timeout=args.startup_timeout + 600)
        rss_warm = rss_mb(pid) if pid else None
        cpu_server0, cpu_client0 = cpu_seconds(pid), own_cpu_seconds()
        t_start = time.perf_counter()
        deadline[0] = time.monotonic() + args.seconds
        while any(th.is_alive() for th in threads):
            if pid:
                r = rss_mb(pid)
                if r is not None:
                    rss_points.append((done_count[0], r))
            for th in threads:
                th.join(timeout=args.sample_interval / max(1, len(threads)))
        wall = time.perf_counter() - t_start
        rss_end = rss_mb(pid) if pid else None
        cpu_server1, cpu_client1 = cpu_seconds(pid), own_cpu_seconds()

        main = [o for o in outcomes if o.index >= args.users]
        lat = [o.latency_s for o in main if o.ok]
        errors = [o for o in outcomes if not o.ok]
        mismatched = [o for o in outcomes if o.findings_max_diff is not None and o.findings_max_diff > args.atol]
        leaked = [o for o in outcomes if o.foreign_tokens]
        texts = [o for o in outcomes if o.token_echoed is not None]
        missing_token = [o for o in texts if not o.token_echoed]
        result["requests"] = {"completed": len(main), "warmup": len(outcomes) - len(main), "errors": len(errors),
                              "findings_checked": sum(o.findings_max_diff is not None for o in outcomes),
                              "findings_mismatched": len(mismatched),
                              "findings_full_precision": sum(bool(o.exact) for o in outcomes),
                              "max_findings_diff": max((o.findings_max_diff or 0.0 for o in outcomes), default=None),
                              "token_echo_checked": len(texts), "token_missing": len(missing_token),
                              "foreign_token_responses": len(leaked)}
        result["latency_s"] = {"p50": _r(percentile(lat, 50)), "p95": _r(percentile(lat, 95)),
                               "max": _r(max(lat) if lat else None), "mean": _r(sum(lat) / len(lat) if lat else None)}
        result["throughput_rps"] = _r(len(main) / wall if wall > 0 else None)
        result["wall_s"] = round(wall, 2)
        # where the box's CPU went during the timed requests: the server (model, Gradio, HTTP) and this process (the
        # gradio_client users, which share the machine here but would not in use); cores / server CPU per request is
        # what the server could answer with its clients elsewhere
        n_main = len(main)
        server_cpu = (cpu_server1 - cpu_server0) if cpu_server0 is not None and cpu_server1 is not None else None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        result["cpu"] = {
            "cores": cores,
            "server_cpu_s_per_request": _r(server_cpu / n_main) if server_cpu is not None and n_main else None,
            "clients_cpu_s_per_request": _r((cpu_client1 - cpu_client0) / n_main) if n_main else None,
            "server_capacity_rps": _r(cores * n_main / server_cpu) if server_cpu and n_main else None,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
        # second half only: per-thread malloc arenas and lazy imports grow RSS early, then plateau; a leak keeps going
        slope = slope_per_100(rss_points[len(rss_points) // 2:])
        result["memory"] = {"server_pid": pid, "rss_after_warmup_mb": rss_warm, "rss_end_mb": rss_end,
                            "rss_growth_mb": _r(rss_end - rss_warm) if rss_warm and rss_end else None,
                            "rss_slope_mb_per_100_requests": _r(slope), "tolerance_mb_per_100": args.rss_slope_mb,
                            "samples": len(rss_points),
                            # (requests done, MB), thinned to ~20 points: shows a plateau vs a steady climb
                            "trace": [list(p) for p in rss_points[:: max(1, len(rss_points) // 20)]]}
        if errors:
            failures.append(f"{len(errors)} request(s) failed, e.g. {errors[0].error}")
        if mismatched:
            o = mismatched[0]
            failures.append(f"{len(mismatched)} response(s) differ from their own single-user reference "
                            f"(max diff {max(x.findings_max_diff for x in mismatched):.2e} > {args.atol:g}), "
                            f"e.g. request {o.index}")
        if leaked:
            failures.append(f"{len(leaked)} response(s) contain another request's token, e.g. request "
                            f"{leaked[0].index}: {leaked[0].foreign_tokens[:3]}")
        if texts and missing_token and args.require_token:
            failures.append(f"{len(missing_token)} response(s) with text do not echo their own token")
        if not reference and not texts:
            failures.append("nothing to check answers against (no reference, no text in responses)")
        if len(main) == 0:
            failures.append("no request completed within the time limit")
        if slope is not None and slope > args.rss_slope_mb and len(main) >= args.min_slope_requests:
            failures.append(f"server RSS grows {slope:.1f} MB per 100 requests (> {args.rss_slope_mb} tolerated)")
        if pid and len(main) < args.min_slope_requests:
            result["memory"]["note"] = (f"fewer than {args.min_slope_requests} requests: the slope is indicative only "
                                        "(not checked)")
        if proc is not None:
            result["server_alive_at_end"] = proc.poll() is None
            if proc.poll() is not None:
                failures.append(f"the server died (exit {proc.returncode}); log tail: {_tail(workdir / 'server.log', 5)}")
    except Exception as e:  # noqa: BLE001 - report as JSON, not a traceback
        failures.append(f"{type(e).__name__}: {e}")
    finally:
        if proc is not None:
            stop_app(proc)
        tempfile.tempdir = old_tempdir
        tmp.cleanup()
    result["failures"] = failures
    result["ok"] = not failures
    return result


def reference_predictions(plan: list[tuple[Path, str]], checkpoint: str | None) -> tuple[dict[int, dict[str, float]], set[str]]:
    """Single-user, in-process predictions for every planned request (same checkpoint and runtime choice as the
    app): ``Pipeline.predict`` itself, one request at a time, notes evidence included (a shortcut through the
    fusion head alone missed the notes' likelihood-ratio update of issue 16 and differed by 0.1)."""
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.pipeline import Pipeline

    pipe = Pipeline.from_checkpoint(checkpoint or DEFAULT_CHECKPOINT, device="cpu")
    ref = {i: dict(pipe.predict([scan], notes_for(tok)).findings) for i, (scan, tok) in enumerate(plan)}
    names = set(pipe.findings)
    del pipe
    return ref, names


SOAK_REQUESTS = 1000


def server_env(args: argparse.Namespace, batching: str | None) -> dict[str, str]:
    env: dict[str, str] = {}
    if batching is not None:
        env["MEDMM_BATCHING"] = "1" if batching == "on" else "0"
    if args.concurrency is not None:
        env["MEDMM_QUEUE_CONCURRENCY"] = str(args.concurrency)
    return env


def _headline(r: dict[str, Any]) -> dict[str, Any]:
    req = r.get("requests", {})
    return {"throughput_rps": r.get("throughput_rps"), "p50_s": r.get("latency_s", {}).get("p50"),
            "p95_s": r.get("latency_s", {}).get("p95"), "completed": req.get("completed"), "errors": req.get("errors"),
            "findings_checked": req.get("findings_checked"), "findings_mismatched": req.get("findings_mismatched"),
            "foreign_token_responses": req.get("foreign_token_responses"), "server_env": r.get("server_env"),
            "rss_slope_mb_per_100_requests": r.get("memory", {}).get("rss_slope_mb_per_100_requests"),
            "rss_end_mb": r.get("memory", {}).get("rss_end_mb"), "cpu": r.get("cpu"), "ok": r.get("ok")}


def compare_batching(args: argparse.Namespace) -> dict[str, Any]:
    """Batching off, then on: two servers, the same plan of requests, users and queue concurrency, one run."""
    if args.url:
        raise SystemExit("--compare-batching starts its own servers; it cannot be combined with --url")
    if args.concurrency is None:
        args.concurrency = 4  # batching needs concurrent requests inside the server to group anything
    shared: dict[str, Any] = {}
    runs = {mode: run(args, server_env(args, mode), shared) for mode in ("off", "on")}
    off, on = _headline(runs["off"]), _headline(runs["on"])
    speedup = (on["throughput_rps"] / off["throughput_rps"]) if off["throughput_rps"] and on["throughput_rps"] else None
    return {"mode": "compare-batching", "users": args.users, "concurrency": args.concurrency,
            "comparison": {"batching_off": off, "batching_on": on,
                           "throughput_ratio_on_vs_off": None if speedup is None else round(speedup, 3)},
            "runs": runs, "failures": [f"batching {m}: {f}" for m, r in runs.items() for f in r["failures"]],
            "ok": all(r["ok"] for r in runs.values()), "loadavg_end": [round(x, 2) for x in os.getloadavg()]}


def compare_concurrency(args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    """One server per queue concurrency (``MEDMM_QUEUE_CONCURRENCY``), one after the other, the same plan and users:
    throughput, latency, CPU per request and memory side by side, with every run's cross-talk checks."""
    if args.url:
        raise SystemExit("--compare-concurrency starts its own servers; it cannot be combined with --url")
    shared: dict[str, Any] = {}
    runs: dict[str, dict[str, Any]] = {}
    for level in levels:
        args.concurrency = level
        runs[str(level)] = run(args, server_env(args, args.batching), shared)
    heads = {k: _headline(r) for k, r in runs.items()}
    first = heads[str(levels[0])]["throughput_rps"]
    ratios = {k: round(h["throughput_rps"] / first, 3) if first and h["throughput_rps"] else None
              for k, h in heads.items()}
    return {"mode": "compare-concurrency", "users": args.users, "levels": levels,
            "comparison": heads, f"throughput_ratio_vs_{levels[0]}": ratios, "runs": runs,
            "failures": [f"concurrency {k}: {f}" for k, r in runs.items() for f in r["failures"]],
            "ok": all(r["ok"] for r in runs.values()), "loadavg_end": [round(x, 2) for x in os.getloadavg()]}


def soak_summary(r: dict[str, Any]) -> dict[str, Any]:
    mem = r.get("memory", {})
    return {"requests": r.get("requests", {}).get("completed"), "wall_s": r.get("wall_s"),
            "rss_after_warmup_mb": mem.get("rss_after_warmup_mb"), "rss_end_mb": mem.get("rss_end_mb"),
            "rss_slope_mb_per_100_requests": mem.get("rss_slope_mb_per_100_requests"),
            "tolerance_mb_per_100": mem.get("tolerance_mb_per_100"), "ok": r.get("ok")}


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(float(v), nd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=None, help="an already running app (default: start app.py on a free port)")
    ap.add_argument("--server-pid", type=int, default=None, help="with --url: the server's pid, for RSS sampling")
    ap.add_argument("--app", default="app.py", help="app file to start, relative to the repo root")
    ap.add_argument("--api-name", default="/predict")
    ap.add_argument("--users", type=int, default=8, help="concurrent users (one client each)")
    ap.add_argument("--client", choices=["browser", "gradio"], default="browser",
                    help="browser: what a browser tab requests, over HTTP (light); gradio: gradio_client, which "
                         "downloads every output file and costs this process ~0.2-0.3 CPU-s per request")
    ap.add_argument("--requests", type=int, default=300, help="requests after warm-up (the memory slope needs a few hundred)")
    ap.add_argument("--seconds", type=float, default=300.0, help="stop sending new requests after this long")
    ap.add_argument("--scans", type=int, default=64, help="distinct scans to cycle through")
    ap.add_argument("--checkpoint", default=None, help="checkpoint for the in-process reference (the app's)")
    ap.add_argument("--no-reference", action="store_true", help="skip the in-process reference (remote app)")
    ap.add_argument("--atol", type=float, default=1e-5, help="max |app - reference| per finding")
    ap.add_argument("--require-token", action="store_true", help="fail when a text response lacks its own token")
    # 20 MB/100 = 0.2 MB per request: far below one retained scan (a 1024^2 float32 image is 4 MB), above the
    # +-10 MB allocator noise of a 1.4 GB server seen over a few hundred requests
    ap.add_argument("--rss-slope-mb", type=float, default=20.0, help="tolerated RSS growth, MB per 100 requests")
    ap.add_argument("--min-slope-requests", type=int, default=100, help="check the slope only after this many")
    ap.add_argument("--sample-interval", type=float, default=1.0, help="RSS sampling period, seconds")
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--batching", choices=["on", "off"], default=None,
                    help="start the server with MEDMM_BATCHING=1/0 (default: the app's own setting)")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="the server's queue concurrency (MEDMM_QUEUE_CONCURRENCY; default: the app's own)")
    ap.add_argument("--compare-batching", action="store_true",
                    help="two servers in one run, same plan and concurrency: batching off, then on; side by side")
    ap.add_argument("--compare-concurrency", default=None, metavar="A,B",
                    help="one server per queue concurrency in one run (e.g. 1,2), same plan; side by side")
    ap.add_argument("--soak", action="store_true",
                    help=f"soak: at least {SOAK_REQUESTS} requests (no time limit below 3600 s); reports the RSS slope")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.soak:
        args.requests = max(args.requests, SOAK_REQUESTS)
        args.seconds = max(args.seconds, 3600.0)
    if args.compare_batching:
        result = compare_batching(args)
    elif args.compare_concurrency:
        try:
            levels = [int(x) for x in args.compare_concurrency.split(",") if x.strip()]
        except ValueError:
            raise SystemExit("--compare-concurrency takes integers separated by commas, e.g. 1,2") from None
        if not levels or min(levels) < 1:
            raise SystemExit("--compare-concurrency takes integers >= 1, e.g. 1,2")
        result = compare_concurrency(args, levels)
    else:
        result = run(args, server_env(args, args.batching))
        if args.soak:
            result["soak"] = soak_summary(result)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
