"""``python -m medmm bench``'s issue-15 sections: runtimes side by side, overhead_ratio, explanation latencies.

Only structure and agreement are asserted (timings are the bench's job, never a unit test's)."""

from __future__ import annotations

import pytest

from medmm import runtime as rt


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from medmm.tools.bench import run_bench

    import torch

    mp = pytest.MonkeyPatch()
    mp.setenv(rt.CACHE_ENV, str(tmp_path_factory.mktemp("onnx-cache")))
    threads = torch.get_num_threads()
    try:  # one thread: on a shared 2-core box two spinning OpenMP threads make this run minutes long
        yield run_bench(repeats=1, cold=False, explain_methods=("gradcam",), explain_repeats=1,
                        batch_sizes=(1,), run_experiments=False, threads=1)
    finally:
        torch.set_num_threads(threads)
        mp.undo()


@pytest.mark.slow
def test_bench_reports_runtimes_side_by_side(result):
    rts = result["runtimes"]
    # openvino-int8 is listed when its int8 model is cached; in this fresh cache it is not: its error says so
    assert set(rts["by_runtime"]) | set(rts["errors"]) == set(rt.available()) and "torch" in rts["by_runtime"]
    assert rts["fastest"] in rts["by_runtime"] and set(rts["errors"]) <= rt.CONTRACT_GATED
    assert all("no int8 image encoder is cached" in e for e in rts["errors"].values())
    for name, v in rts["by_runtime"].items():
        assert v["p50_ms"] > 0 and v["p95_ms"] >= v["p50_ms"] and v["image_encoder"]["n"] >= 20
        if name not in rt.CONTRACT_GATED:   # issue 15: within 1e-3 of torch on every bench input
            assert v["max_abs_dp_vs_torch"] <= 1e-3, name
    assert rts["by_runtime"]["torch"]["max_abs_dp_vs_torch"] == 0.0
    assert result["runtime"] == "torch" or result["runtime"]["name"] in rts["by_runtime"]


@pytest.mark.slow
def test_bench_overhead_ratio_and_explanations(result):
    terms = result["overhead_ratio_terms"]
    assert result["overhead_ratio"] == pytest.approx(
        terms["whole_request.png"]["p50_ms"] / terms["bare_backbone"]["p50_ms"], rel=1e-2)
    assert result["overhead_target"] == 1.3
    ex = result["explanations"]
    assert ex["gradcam"]["target_ms"] == 150.0 and ex["gradcam"]["n"] >= 5
    assert "note words" in ex["what"]


class _FakePipeline:
    """Stands in for a Pipeline: a model to copy and the notes' caches with their lock."""

    def __init__(self) -> None:
        import threading
        from collections import OrderedDict
        from types import SimpleNamespace

        self.model = SimpleNamespace(image_encoder=SimpleNamespace(model=None))
        self.meta, self.device, self.runtime = None, "cpu", None
        self._text_cache, self._tok_cache, self._text_lock = OrderedDict(), OrderedDict(), threading.Lock()


def test_the_bench_copies_of_a_pipeline_own_their_caches(monkeypatch) -> None:
    """A copy sharing a cache dict with its original but not the lock races (issue 26): every copy owns all three."""
    from types import SimpleNamespace

    from medmm.tools.bench.copies import pipeline_with_backbone
    from medmm.tools.bench.runtimes import runtime_pipelines

    pipe = _FakePipeline()
    monkeypatch.setattr(rt, "build", lambda name, *a, **k: SimpleNamespace(name=name))
    clones = [pipeline_with_backbone(pipe, backbone="folded"), *runtime_pipelines(pipe, ["torch", "other"])[0].values()]
    assert len(clones) == 3 and clones[0].model.image_encoder.model == "folded" and pipe.model.image_encoder.model is None
    for clone in clones:
        for attr in ("_text_cache", "_tok_cache", "_text_lock"):
            assert getattr(clone, attr) is not getattr(pipe, attr), attr
