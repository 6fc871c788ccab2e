"""medmm.runtime: the ONNX Runtime / OpenVINO encoders agree with torch, the switch resolves as documented,
exports are cached by key, and concurrent calls keep their own results. Timings live in the bench, not here."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from medmm import runtime as rt
from medmm.models.checkpoint import DEFAULT_CHECKPOINT
from medmm.pipeline import Pipeline
from tests.helpers import chest_film, require_shared

TOL = 1e-3  # issue 15: outputs within 1e-3 of torch (probabilities and features); observed ~1e-5
NOTES = "Fever and productive cough for three days, crackles at the right base. Rule out pneumonia."


def _phantom(seed: int, h: int = 300, w: int = 260) -> np.ndarray:
    return chest_film(seed, h, w)   # a real chest film: the input gate refuses synthetic patterns


def _png(tmp: Path, seed: int) -> Path:
    from PIL import Image

    path = tmp / f"scan_{seed}.png"
    Image.fromarray((_phantom(seed) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Exports go to a temporary cache (never into the tree, never the user's cache)."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv(rt.CACHE_ENV, str(folder))
    yield folder
    mp.undo()


@pytest.fixture(scope="module")
def torch_pipe(cache):
    return Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu", runtime="torch")


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scans")
    return [_png(tmp, s) for s in range(3)]


def _runtime_pipe(name: str) -> Pipeline:
    if not rt.installed(name):
        pytest.skip(f"{name} is not installed")
    return Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu", runtime=name)


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def onnx_pipe(request, cache):
    return _runtime_pipe(request.param)


# ---------------------------------------------------------------------------------------------- agreement
def _max_prob_diff(a, b) -> float:
    return max(abs(a.findings[f] - b.findings[f]) for f in a.findings)


@pytest.mark.parametrize("kind", ["image", "notes", "both", "two_views"])
def test_runtime_matches_torch(onnx_pipe, torch_pipe, scans, kind):
    args = {"image": ([scans[0]], None), "notes": ([], NOTES), "both": ([scans[1]], NOTES),
            "two_views": ([scans[0], scans[2]], NOTES)}[kind]
    got, ref = onnx_pipe.predict(*args), torch_pipe.predict(*args)
    assert onnx_pipe.runtime_name != "torch" and torch_pipe.runtime_name == "torch"
    assert _max_prob_diff(got, ref) <= TOL
    embeddings = {"image_embedding": (got.image_embedding, ref.image_embedding)}
    if args[1]:                     # the notes' sentence embedding (the report's ranking), through each runtime
        inputs = [p.prepare(*args) for p in (onnx_pipe, torch_pipe)]
        embeddings["notes_embedding"] = (onnx_pipe.notes_embedding(inputs[0]), torch_pipe.notes_embedding(inputs[1]))
    for name, (a, b) in embeddings.items():
        assert (a is None) == (b is None)
        if a is not None:
            assert np.abs(a - b).max() <= TOL
    assert got.positive == ref.positive


def test_runtime_real_radiographs_match_torch(onnx_pipe, torch_pipe):
    """On real films (Kermany JPEG, NIH DICOM) too, not only phantoms."""
    files = [next(iter(sorted(require_shared("kermany224", "train", "PNEUMONIA").glob("*.jpeg")))),
             require_shared("dicom", "nhsx_nih_dx.dcm")]
    for f in files:
        assert _max_prob_diff(onnx_pipe.predict([f], NOTES), torch_pipe.predict([f], NOTES)) <= TOL


def test_dynamic_batch_rows_are_independent(onnx_pipe, torch_pipe, scans):
    """A batch of N different images gives each row its own features (batching must not mix rows)."""
    x = torch.cat([torch_pipe.prepare([s]).pixels[0] for s in scans])  # [3, 3, S, S]
    with torch.inference_mode():
        ref = torch_pipe.model.image_encoder(x.contiguous(memory_format=torch.channels_last))
    batched = onnx_pipe.runtime.encode_image_batch(x)
    single = torch.cat([onnx_pipe.runtime.encode_image_batch(x[i:i + 1]) for i in range(len(scans))])
    assert batched.shape == ref.shape == (3, 1280)
    assert rt.max_abs_diff(batched, ref) <= TOL and rt.max_abs_diff(batched, single) <= 1e-4
    assert rt.max_abs_diff(batched[0], batched[1]) > 1e-2  # different inputs really differ


def test_concurrent_calls_keep_their_own_results(onnx_pipe, torch_pipe, scans):
    """Threads share one session (OpenVINO: one infer request per thread); every answer is its own."""
    want = {i: torch_pipe.predict([s]).findings for i, s in enumerate(scans)}
    errors: list[str] = []

    def work(i: int) -> None:
        for _ in range(4):
            got = onnx_pipe.predict([scans[i]]).findings
            if max(abs(got[f] - want[i][f]) for f in got) > TOL:
                errors.append(f"scan {i}")

    threads = [threading.Thread(target=work, args=(i % 3,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_served_pipeline_has_run_every_graph_once_before_its_first_request(cache, monkeypatch):
    """serving_pipeline runs each of the runtime's graphs (image, gate, head, notes) once in the calling thread, so
    that no two request threads make a runtime's first calls at once (two did, and deadlocked, under OpenVINO)."""
    from medmm.runtime.sessions import LazySession
    from medmm.service import serving_pipeline

    pipe = _runtime_pipe("openvino")
    graphs = pipe.graphs
    assert graphs is not None and graphs.has_notes
    sessions = {"image": graphs.encoders.image, "text": graphs.encoders.text, "gate": graphs.gate, "head": graphs.head}
    ran: list[int] = []
    for name in ("run", "run_all"):
        real = getattr(LazySession, name)
        monkeypatch.setattr(LazySession, name, lambda self, feeds, _real=real: ran.append(id(self)) or _real(self, feeds))
    served, _ = serving_pipeline(pipe)
    assert {k: ran.count(id(s)) for k, s in sessions.items()} == {k: 1 for k in sessions}
    assert served.graphs is graphs and all(s.opened for s in sessions.values())


def test_explanations_still_use_torch(onnx_pipe, scans):
    """Gradients need the torch model: Grad-CAM works under an ONNX runtime and agrees with its prediction."""
    from medmm.explain import explain

    inputs = onnx_pipe.prepare([scans[0]], NOTES)
    pred = onnx_pipe.predict_prepared(inputs)
    exp = explain(onnx_pipe, inputs, pred, method="gradcam")
    assert exp.heatmap is not None and exp.heatmap.shape == (224, 224)
    assert exp.modality["p_both"] == pytest.approx(exp.probability, abs=TOL)


# ---------------------------------------------------------------------------------------------- the switch
def test_resolve_names_and_env(monkeypatch):
    monkeypatch.delenv(rt.ENV_VAR, raising=False)
    assert rt.resolve("torch") == "torch"
    auto = rt.resolve(None)
    # without a checkpoint's measured contract (resolve's ``passes``), auto never takes a contract-gated runtime
    assert auto == next(r for r in rt.AUTO_ORDER_CPU if rt.installed(r) and r not in rt.CONTRACT_GATED)
    monkeypatch.setenv(rt.ENV_VAR, "torch")
    assert rt.resolve(None) == "torch"
    assert rt.resolve("TORCH ") == "torch"
    with pytest.raises(rt.RuntimeUnavailable, match="Unknown runtime"):
        rt.resolve("tensorrt")


def test_explicit_runtime_that_is_missing_is_an_error(monkeypatch):
    monkeypatch.setattr(rt, "installed", lambda name, export=True: name == "torch")
    with pytest.raises(rt.RuntimeUnavailable, match="not installed"):
        rt.resolve("onnxruntime")
    assert rt.resolve("auto") == "torch"  # auto falls back to what is installed


def test_onnx_runtime_without_the_onnx_exporter_counts_as_absent(monkeypatch):
    """onnxruntime installed but ``onnx`` missing (torch.onnx.export needs it): auto must pick torch, not crash."""
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # makes ``import onnx`` raise ImportError
    assert not rt.installed("onnxruntime") and not rt.installed("openvino")
    assert rt.resolve("auto") == "torch"
    with pytest.raises(rt.RuntimeUnavailable, match="not installed"):
        rt.resolve("onnxruntime")


def test_cuda_resolution_without_gpu_providers(monkeypatch):
    """On CUDA, auto is ONNX Runtime only with its CUDA provider; OpenVINO is refused (CPU only)."""
    monkeypatch.setattr(rt, "ort_cuda_available", lambda: False)
    assert rt.resolve("auto", "cuda") == "torch"
    if rt.installed("openvino"):
        with pytest.raises(rt.RuntimeUnavailable, match="CPU only"):
            rt.resolve("openvino", "cuda")
    if rt.installed("onnxruntime"):
        with pytest.raises(rt.RuntimeUnavailable, match="CUDAExecutionProvider"):
            rt.resolve("onnxruntime", "cuda:0")
        monkeypatch.setattr(rt, "ort_cuda_available", lambda: True)
        assert rt.resolve("auto", "cuda") == "onnxruntime"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_pipeline_matches_cpu(torch_pipe, scans, cache):  # pragma: no cover - GPU machines only
    gpu = Pipeline.from_checkpoint(DEFAULT_CHECKPOINT, device="cuda")
    assert _max_prob_diff(gpu.predict([scans[0]], NOTES), torch_pipe.predict([scans[0]], NOTES)) <= TOL


# ---------------------------------------------------------------------------------------------- export cache
def test_export_is_keyed_and_reused(torch_pipe, tmp_path):
    if not rt.installed("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    enc = torch_pipe.model.image_encoder
    a = rt.export_image_encoder(enc, "sha-a", 64, tmp_path)
    mtime = a.stat().st_mtime_ns
    assert rt.export_image_encoder(enc, "sha-a", 64, tmp_path) == a and a.stat().st_mtime_ns == mtime  # reused
    b = rt.export_image_encoder(enc, "sha-b", 64, tmp_path)  # a retrained checkpoint: a new file
    assert b != a and b.is_file()
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary
    session = rt.OrtSession(a)
    out = session.run({"pixels": np.zeros((2, 3, 64, 64), np.float32)})
    assert out.shape == (2, enc.num_features)


def test_pipeline_records_its_runtime(onnx_pipe, cache):
    d = onnx_pipe.runtime.describe()
    assert d["name"] == onnx_pipe.runtime_name
    assert all(Path(p).parent == cache for p in d["files"].values())
    # the text encoder is exported unless the model reads notes through more than it (the bag-of-words pathway)
    assert set(d["files"]) == {"image_encoder"} | ({"text_encoder"} if onnx_pipe.runtime.text is not None else set())


def test_cli_runtime_choices_match_the_module():
    from medmm.__main__ import RUNTIME_CHOICES, build_parser

    assert RUNTIME_CHOICES == rt.CHOICES
    args = build_parser().parse_args(["predict", "x.png", "--runtime", "torch"])
    assert args.runtime == "torch"


def test_occlusion_through_the_runtime_matches_torch(onnx_pipe, torch_pipe, scans):
    """Occlusion's forward-only perturbations go through the ONNX runtime: same map as the torch model's."""
    from medmm.explain import explain

    maps = []
    for p in (onnx_pipe, torch_pipe):
        inputs = p.prepare([scans[1]])
        maps.append(explain(p, inputs, p.predict_prepared(inputs), finding="Pneumonia", method="occlusion",
                            occlusion_stride=32).attributions)
    scale = float(np.abs(maps[1]).max())
    assert scale > 0 and np.abs(maps[0] - maps[1]).max() <= 1e-3 * max(scale, 1.0)


def test_note_word_occlusion_through_the_runtime_matches_torch(onnx_pipe, torch_pipe):
    """The default note-word scores (word occlusion, forward-only) run through the runtime's text encoder when it
    has one; they equal the torch model's."""
    from medmm.explain import explain

    got = []
    for p in (onnx_pipe, torch_pipe):
        inputs = p.prepare([], NOTES)
        got.append(explain(p, inputs, p.predict_prepared(inputs), finding="Pneumonia").tokens)
    assert [w for w, _ in got[0]] == [w for w, _ in got[1]]
    assert max(abs(a - b) for (_, a), (_, b) in zip(*got)) <= 1e-3
