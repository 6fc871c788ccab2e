"""The Ray commands' options (``medmm serve``, ``predict --engine ray``): refused with one line before Ray or the
model load, with or without Ray installed (the Ray paths themselves: tests/test_ray.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medmm", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (("serve", "--replicas", "2", "--max-replicas", "3"), "give --replicas or --min-replicas/--max-replicas, not both"),
    (("serve", "--min-replicas", "3", "--max-replicas", "2"), "--min-replicas must be at least 1 and at most --max-replicas"),
    (("serve", "--batch-wait-ms", "-1"), "--batch-wait-ms must be 0 or more"),
    (("predict", "--notes", "cough", "--engine", "ray"), "--engine ray scores a --manifest"),
    (("predict", "--notes", "cough", "--workers", "2"), "--workers needs --engine ray"),
])
def test_bad_scale_options_are_one_line(args: tuple[str, ...], message: str) -> None:
    out = _cli(*args)
    assert out.returncode == 2 and out.stderr.strip() == f"error: {message}", out.stderr[-1000:]


def test_zero_replicas_or_workers_are_refused_by_the_parser() -> None:
    for args in (("serve", "--replicas", "0"), ("predict", "--workers", "0", "--notes", "x")):
        out = _cli(*args)
        assert out.returncode == 2 and "must be at least 1" in out.stderr


def test_serve_options_map_onto_the_deployment() -> None:
    from medmm.scale.serve import ServeOptions

    fixed = ServeOptions(checkpoint="c", replicas=3, max_ongoing=6).deployment_options()
    assert fixed["num_replicas"] == 3 and fixed["max_ongoing_requests"] == 6 and "autoscaling_config" not in fixed
    scaled = ServeOptions(checkpoint="c", min_replicas=1, max_replicas=4).deployment_options()
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2.0}
    assert "num_replicas" not in scaled
