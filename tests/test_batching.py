"""medmm.service.ImageBatcher: concurrent calls grouped into one forward, each caller gets its own rows back."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.helpers import chest_film
import torch

from medmm.service import ImageBatcher, batcher_for, batching_from_env, serving_pipeline


def _rowwise(x: torch.Tensor) -> torch.Tensor:
    """A row-independent stand-in encoder: [N, 3, S, S] -> [N, 4] that identifies its input."""
    time.sleep(0.02)  # slow enough that concurrent callers queue up behind the first forward
    return torch.stack([x.mean((1, 2, 3)), x.amax((1, 2, 3)), x.amin((1, 2, 3)), x[:, 0, 0, 0]], dim=1)


def _run_concurrently(fn, n: int) -> list:
    out: list = [None] * n
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            out[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_concurrent_calls_are_grouped_and_unmixed():
    batcher = ImageBatcher(_rowwise, max_batch=32, max_wait_s=0.05)
    try:
        gen = torch.Generator().manual_seed(0)
        inputs = [torch.rand(1 + i % 3, 3, 8, 8, generator=gen) + i for i in range(12)]  # 1-3 views each
        got = _run_concurrently(lambda i: batcher(inputs[i]), len(inputs))
        for x, y in zip(inputs, got):
            assert isinstance(y, torch.Tensor) and y.shape == (x.shape[0], 4)
            torch.testing.assert_close(y, _rowwise(x), rtol=0, atol=1e-6)  # its own rows, in its own order
        stats = batcher.stats()
        assert stats["images"] == sum(x.shape[0] for x in inputs)
        assert stats["largest_batch"] > 3 and stats["batches"] < len(inputs)  # really grouped
    finally:
        batcher.close()


def test_max_batch_is_respected_and_errors_reach_every_caller():
    sizes: list[int] = []

    def encode(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        if (x[:, 0, 0, 0] < 0).any():
            raise ValueError("bad row")
        return _rowwise(x)

    batcher = ImageBatcher(encode, max_batch=4, max_wait_s=0.05)
    try:
        _run_concurrently(lambda i: batcher(torch.full((1, 3, 4, 4), float(i))), 10)
        assert max(sizes) <= 4 and sum(sizes) == 10
        sizes.clear()
        got = _run_concurrently(lambda i: batcher(torch.full((1, 3, 4, 4), -1.0 if i == 0 else 1.0)), 4)
        assert any(isinstance(g, ValueError) for g in got)  # the failing batch's callers all see the error
        assert batcher(torch.ones(1, 3, 4, 4)).shape == (1, 4)  # and the worker keeps serving
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher(torch.ones(1, 3, 4, 4))


@pytest.fixture(scope="module")
def pipe():
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT
    from medmm.pipeline import Pipeline

    return Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu")


def _phantoms(n: int) -> list:
    from medmm.io import Scan, ScanMetadata

    out = []
    for i in range(n):
        img = chest_film(i, 200, 180)   # real chest films: the input gate refuses synthetic patterns
        meta = ScanMetadata(source_format="png", modality=None, view=None, photometric_interpretation=None,
                            bits_stored=8, pixel_spacing_mm=None, transfer_syntax=None, rows=200, columns=180,
                            frames=1, windowing=None, inverted=False)
        out.append(Scan(pixels=np.clip(img, 0, 1).astype(np.float32), metadata=meta))
    return out


def test_pipeline_batching_gives_every_request_its_own_answer(pipe):
    scans = _phantoms(8)
    notes = [None, "cough", None, "fever and crackles", None, None, "dyspnoea", None]
    want = [pipe.predict([s], n) for s, n in zip(scans, notes)]
    batcher = batcher_for(pipe, max_batch=16, max_wait_ms=30)
    served = pipe.for_serving(batcher=batcher)
    try:
        assert served.batcher is batcher and served.forward_only_encoder() is batcher and served.model is pipe.model
        got = _run_concurrently(lambda i: served.predict([scans[i]], notes[i]), len(scans))
        for w, g in zip(want, got):
            assert not isinstance(g, Exception), g
            assert max(abs(g.findings[f] - w.findings[f]) for f in w.findings) <= 1e-5
            assert np.abs(g.image_embedding - w.image_embedding).max() <= 1e-4
        assert batcher.stats()["largest_batch"] > 1
    finally:
        batcher.close()
    # the loaded pipeline is left as it was: no batcher written onto it
    assert pipe.batcher is None and pipe.predict([scans[0]]).findings == pytest.approx(want[0].findings, abs=1e-5)


def test_batching_from_env(pipe, monkeypatch):
    monkeypatch.delenv("MEDMM_BATCHING", raising=False)
    assert batching_from_env(pipe) is None and pipe.batcher is None
    monkeypatch.setenv("MEDMM_BATCHING", "1")
    batcher = batching_from_env(pipe)
    try:
        assert isinstance(batcher, ImageBatcher) and pipe.batcher is None
    finally:
        batcher.close()


def test_serving_pipeline_is_built_with_its_batcher_and_idle_power(pipe, monkeypatch):
    """The server's pipeline is a new one over the same loaded model, built with the batcher and the idle power; the
    loaded pipeline is not patched."""
    from medmm import service

    monkeypatch.setenv("MEDMM_BATCHING", "1")
    monkeypatch.setattr(service, "measure_idle_baseline", lambda: {"cpu_package": 7.5})
    threads = torch.get_num_threads()
    try:
        served, applied = serving_pipeline(pipe)
    finally:
        torch.set_num_threads(threads)
    try:
        assert isinstance(served.batcher, ImageBatcher) and served.idle_watts == {"cpu_package": 7.5}
        assert served.model is pipe.model and served.scope == pipe.scope and served.gate is pipe.gate
        assert pipe.batcher is None and pipe.idle_watts == {}
        assert applied["batching"] is True and applied["idle_watts"] == {"cpu_package": 7.5}
    finally:
        served.batcher.close()


def test_explanations_work_with_batching_on(pipe):
    """Explanations take their forward-only features from the batcher; gradient methods still work with them."""
    from medmm.explain import explain

    scan = _phantoms(1)[0]
    inputs = pipe.prepare([scan], "cough and fever for three days")
    pred = pipe.predict_prepared(inputs)
    want = explain(pipe, inputs, pred, finding="Pneumonia").tokens
    served = pipe.for_serving(batcher=batcher_for(pipe, max_wait_ms=1))
    try:
        inputs = served.prepare([scan], "cough and fever for three days")  # fresh: nothing encoded yet
        with torch.inference_mode():
            pred_b = served.predict_prepared(inputs)
        for method in ("gradcam", "occlusion"):
            exp = explain(served, inputs, pred_b, finding="Pneumonia", method=method)
            assert exp.heatmap is not None and exp.tokens
        got = explain(served, inputs, pred_b, finding="Pneumonia").tokens
        assert [w for w, _ in got] == [w for w, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-3)
    finally:
        served.batcher.close()
