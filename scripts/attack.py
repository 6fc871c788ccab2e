"""Peak memory of a one-shot CLI prediction per hostile scan file (issue 29): a benchmark, not a unit test.

Each file goes through ``python -m medmm predict FILE --json`` in its own subprocess; the child's own peak RSS comes
from ``os.wait4`` (its rusage alone, not the maximum over every child so far; the files are built in another
interpreter so that this one stays small: a child's ru_maxrss includes what it inherited before exec), with the outcome (processed /
refused / crashed / timed out), the first line of the refusal and the wall time. The baseline is a normal
prediction on ``assets/examples/04_adult_dicom_dx.dcm``. Files are built by ``tests/make_bad_inputs.py``.

    .venv/bin/python scripts/attack.py                      # the issue-29 DICOM cases, writes docs/attack.json
    .venv/bin/python scripts/attack.py --all                # the whole hostile-scan corpus
    .venv/bin/python scripts/attack.py --keep /tmp/hostile  # keep the generated files there

Exit status 1 when a file exceeds its peak-RSS budget (``--budget-gb``, 2.5 GB: the issue's done-when figure), a
hostile file is processed when it should be refused, or a run crashes or times out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "assets" / "examples" / "04_adult_dicom_dx.dcm"
ISSUE_29 = ("jpeg_sof_40000.dcm", "jpeg_sof_20000.dcm", "jpeg_7000_in_256x200.dcm", "jpeg_fragment_truncated.dcm",
            "deflate_bomb_2gb.dcm", "jpeg_baseline_ok.dcm", "deflated_ok.dcm")
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux


_WRITE = """
import json, sys
from pathlib import Path
from tests.make_bad_inputs import _BUILDERS, SCANS
cases = [c for c in SCANS if sys.argv[2] == "all" or c.name in sys.argv[3:]]
for c in cases:
    (Path(sys.argv[1]) / c.name).write_bytes(_BUILDERS[c.name]())
print(json.dumps([{"name": c.name, "expect": c.expect} for c in cases]))
"""


def _write_files(folder: Path, everything: bool) -> list[dict]:
    """Build the corpus files (``tests/make_bad_inputs.py``) in a separate interpreter, run from the repository root:
    a forked child's ru_maxrss includes what its parent held before exec, so this process stays small (building the
    7000 x 7000 JPEG alone takes ~150 MB). Returns ``[{"name", "expect"}]``."""
    proc = subprocess.run([sys.executable, "-c", _WRITE, str(folder), "all" if everything else "some", *ISSUE_29],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_one(path: Path, timeout: float) -> dict:
    """One-shot ``predict --json`` on ``path``: outcome, message, peak RSS (MB) of that child alone, seconds."""
    cmd = [sys.executable, "-m", "medmm", "predict", str(path), "--json"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=env, start_new_session=True)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    row = {"peak_rss_mb": round(usage.ru_maxrss * _RSS_UNIT / 2**20, 1), "seconds": round(seconds, 2),
           "exit_code": proc.returncode}
    if timed_out:
        row.update(outcome="timed out", message=f"killed after {timeout:g} s")
    elif proc.returncode == 0:
        try:
            result = json.loads(stdout)
            status_ = result.get("status", "ok") if isinstance(result, dict) else "ok"
            warnings = result.get("warnings", []) if isinstance(result, dict) else []
        except json.JSONDecodeError:
            status_, warnings = "unparsed output", []
        row.update(outcome="processed" if status_ == "ok" else f"processed ({status_})",
                   message="; ".join(str(w) for w in warnings)[:300])
    elif proc.returncode == 2:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        message = lines[-1] if lines else ""
        row.update(outcome="refused", message=message.replace(str(path), path.name)[:300])
    else:
        row.update(outcome="crashed", message=(stderr.strip().splitlines() or [""])[-1][:300])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="every hostile scan of tests/make_bad_inputs.py")
    parser.add_argument("--keep", default=None, help="folder to write the files into (default: a temporary one)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "attack.json"), help="JSON written here")
    parser.add_argument("--budget-gb", type=float, default=2.5, help="peak-RSS budget per one-shot prediction")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per file before it is killed")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        cases = _write_files(folder, args.all)
        rows = []
        for label, path, expect in [("baseline: " + BASELINE.name, BASELINE, "ok")] + [
                (c["name"], folder / c["name"], c["expect"]) for c in cases]:
            row = {"file": label, "bytes": path.stat().st_size, "expect": expect, **run_one(path, args.timeout)}
            row["within_budget"] = row["peak_rss_mb"] <= args.budget_gb * 1024
            rows.append(row)
            print(f"{label:42s} {row['outcome']:10s} {row['peak_rss_mb']:8.0f} MB {row['seconds']:6.1f} s  "
                  f"{row['message'][:90]}", flush=True)

    failed = [r for r in rows if not r["within_budget"] or r["outcome"] in ("crashed", "timed out")
              or (r["expect"] == "error" and r["outcome"].startswith("processed"))]
    report = {
        "command": "python scripts/attack.py" + (" --all" if args.all else ""),
        "what": "python -m medmm predict FILE --json, one subprocess per file; peak RSS of that child (os.wait4)",
        "budget_gb": args.budget_gb,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "files": rows,
        "failed": [r["file"] for r in failed],
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\n{len(rows)} runs, {len(failed)} over budget, crashed or wrongly processed; JSON: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
