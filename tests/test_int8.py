"""``openvino-int8`` (issue 28, item 2): the contract logic, ``auto``'s choice, the one-line errors, a cached int8
model loaded without torch, and explanations that never read the int8 graph.

The fast tests use fake cache folders (no model). The ``slow`` ones share one warmed cache folder (a graph-set
export, ~20 s) and one int8 model quantised on the four shipped example films (seconds; the real calibration on
../shared films is ``scripts/int8_check.py``'s); they need openvino, and nncf for the quantisation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medmm import runtime as rt
from medmm.runtime import int8

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
FILM = EXAMPLES / "04_adult_dicom_dx.dcm"
VNNI_CPU = "flags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni\n"
NEEDS_OPENVINO = pytest.mark.skipif(not rt.installed("openvino", export=False), reason="openvino not installed")


# ============================================================================================ contract logic
def test_cpu_int8_isa_reads_the_flags_and_the_onednn_cap() -> None:
    assert int8.cpu_int8_isa(VNNI_CPU, cap="") == "vnni"
    assert int8.cpu_int8_isa("flags\t: avx2 amx_int8 avx512_vnni\n", cap="") == "amx"
    assert int8.cpu_int8_isa("flags\t: avx2 avx512bw\n", cap="") == "avx512"
    assert int8.cpu_int8_isa("flags\t: sse4_2 avx2\n", cap="") == "avx2"
    assert int8.cpu_int8_isa("flags\t: sse4_2\n", cap="") == "none"
    # ONEDNN_MAX_CPU_ISA lowers what the plugin may use, never raises it
    assert int8.cpu_int8_isa(VNNI_CPU, cap="AVX512_CORE") == "avx512"
    assert int8.cpu_int8_isa(VNNI_CPU, cap="avx2") == "avx2"
    assert int8.cpu_int8_isa("flags\t: avx2\n", cap="avx512_core_vnni") == "avx2"


def test_a_contract_holds_only_when_it_passed_with_this_cpus_int8_instructions(monkeypatch) -> None:
    monkeypatch.setattr(int8, "cpu_int8_isa", lambda *a, **k: "vnni")
    assert int8.contract_holds_here({"passed": True, "cpu_int8_isa": "vnni"})
    assert not int8.contract_holds_here({"passed": False, "cpu_int8_isa": "vnni"})
    assert not int8.contract_holds_here({"passed": True, "cpu_int8_isa": "avx2"})
    assert not int8.contract_holds_here({"passed": "yes", "cpu_int8_isa": "vnni"})
    assert not int8.contract_holds_here(None)


def _fake_cache(folder: Path, contracts: dict[str, bool] | None) -> tuple:
    """A cache folder with the default checkpoint's graph-set index (empty graph files) and, with ``contracts``
    (isa -> passed), an int8 folder holding those contracts. Returns (meta, gate)."""
    from medmm.gate import load_gate
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT, read_meta
    from medmm.runtime.cache import GraphSet
    from medmm.runtime.graphs import graph_set_key

    meta, gate = read_meta(DEFAULT_CHECKPOINT), load_gate(DEFAULT_CHECKPOINT)
    files = {"image": "image_x.onnx", "head": "head_x.onnx", "gate": "gate_x.onnx"}
    folder.mkdir(parents=True, exist_ok=True)
    for f in files.values():
        (folder / f).write_bytes(b"")
    GraphSet(graph_set_key(meta, gate), meta.weights_sha256, files).save(folder)
    if contracts is not None:
        model = int8.model_folder(folder / "image_x.onnx", "k")
        model.mkdir()
        (model / int8.MODEL_FILE).write_text("<net/>")
        (model / int8.MODEL_FILE).with_suffix(".bin").write_bytes(b"")
        for isa, passed in contracts.items():
            int8.write_contract(model, {"passed": passed, "cpu_int8_isa": isa})
    return meta, gate


@pytest.mark.parametrize("contracts, expected", [
    ({"vnni": True}, True),                     # measured here, passed
    ({"vnni": False}, False),                   # measured here, failed
    ({"avx2": True}, False),                    # passed on another int8 instruction set only
    ({"avx2": True, "vnni": False}, False),
    (None, False),                              # no int8 model at all
])
def test_auto_takes_int8_only_where_its_contract_passed_on_this_isa(tmp_path, monkeypatch, contracts,
                                                                    expected) -> None:
    from medmm.runtime.graphs import int8_passes

    monkeypatch.setattr(int8, "cpu_int8_isa", lambda *a, **k: "vnni")
    meta, gate = _fake_cache(tmp_path, contracts)
    assert int8_passes(meta, gate, tmp_path) is expected
    assert int8_passes(meta, gate, tmp_path / "elsewhere") is False     # another cache folder: nothing there


@NEEDS_OPENVINO
def test_resolve_auto_order(monkeypatch) -> None:
    monkeypatch.delenv(rt.ENV_VAR, raising=False)
    assert rt.resolve("auto", export=False) == "openvino"                        # no contract consulted: never int8
    assert rt.resolve("auto", export=False, passes=lambda r: False) == "openvino"
    assert rt.resolve("auto", export=False, passes=lambda r: r == "openvino-int8") == "openvino-int8"
    assert rt.resolve("openvino-int8", export=False) == "openvino-int8"          # explicit: no contract needed
    with pytest.raises(rt.RuntimeUnavailable, match="CPU only"):
        rt.resolve("openvino-int8", "cuda", export=False)


def test_explicit_int8_without_nncf_or_cached_model_is_one_clear_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(int8, "nncf_installed", lambda: False)
    graph = tmp_path / "image_x.onnx"
    graph.write_bytes(b"")
    with pytest.raises(int8.Int8Unavailable) as e:
        int8.image_model(graph, None)
    msg = str(e.value)
    assert "\n" not in msg and "nncf is not installed" in msg and int8.REQUIREMENTS_FILE in msg
    assert "--runtime openvino" in msg
    assert isinstance(e.value, rt.RuntimeUnavailable)   # the CLI's one-line errors
    with pytest.raises(int8.Int8Unavailable, match="no int8 image encoder is cached"):
        int8.image_model(graph, None, quantise=False)   # the bench never quantises
    with pytest.raises(int8.Int8Unavailable, match="nncf"):
        int8.quantize(graph, None)


def test_explicit_int8_takes_the_cached_model_even_when_its_contract_failed(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(int8, "nncf_installed", lambda: False)
    monkeypatch.setattr(int8, "cpu_int8_isa", lambda *a, **k: "vnni")
    _fake_cache(tmp_path, {"vnni": False})
    found = int8.image_model(tmp_path / "image_x.onnx", None)
    assert found.name == int8.MODEL_FILE and found.parent.name.startswith(int8.PREFIX)
    assert "contract failed" in caplog.text


# ============================================================================================ a real int8 model
@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    """A warmed cache folder with an int8 image encoder quantised on the shipped example films."""
    if not rt.installed("openvino"):
        pytest.skip("openvino (and onnx, to export) not installed")
    if not int8.nncf_installed():
        pytest.skip(f"nncf not installed (pip install -r {int8.REQUIREMENTS_FILE})")
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT, read_meta

    folder = tmp_path_factory.mktemp("int8-cache")
    found = rt.warm(DEFAULT_CHECKPOINT, folder=folder)
    films = int8.CalibrationSet(EXAMPLES, tuple(sorted(p for p in EXAMPLES.iterdir()
                                                       if p.suffix in (".jpeg", ".jpg", ".png", ".dcm"))))
    model = int8.quantize(folder / found.files["image"], read_meta(DEFAULT_CHECKPOINT).preprocessing,
                          films=films)
    return folder, model


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != rt.ENV_VAR}
    return {**env, rt.CACHE_ENV: str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# a fresh interpreter: the pipeline (runtime from argv, '' = auto), its runtime and image model, one prediction,
# whether torch got imported
PREDICT = r"""
import json, sys
from medmm.pipeline import Pipeline
pipe = Pipeline.from_checkpoint(runtime=sys.argv[1] or None)
pred = pipe.predict([sys.argv[2]])
print(json.dumps({"runtime": pipe.runtime_name, "image": pipe.runtime.files.get("image_encoder"),
                  "findings": pred.findings, "warnings": list(pred.warnings), "torch": "torch" in sys.modules}))
"""


def _predict(cache: Path, runtime: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PREDICT, runtime, str(FILM)], cwd=ROOT, env=_env(cache),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_cached_int8_model_predicts_without_torch_and_auto_follows_its_contract(int8_cache) -> None:
    folder, model = int8_cache
    explicit = _predict(folder, "openvino-int8")
    assert explicit["runtime"] == "openvino-int8" and not explicit["torch"]
    assert Path(explicit["image"]).parent == model
    fp32 = _predict(folder, "openvino")
    assert fp32["runtime"] == "openvino" and not fp32["torch"]
    # the int8 graph really ran: close to fp32, not equal to it
    dp = max(abs(explicit["findings"][f] - fp32["findings"][f]) for f in fp32["findings"])
    assert 0 < dp < 0.5
    # an explicit int8 run without a passed contract says so on every prediction; fp32 does not
    assert "has no accuracy check" in explicit["warnings"][0] and "Speed experiment" in explicit["warnings"][0]
    assert not any("int8" in w for w in fp32["warnings"])
    # auto: fp32 until a contract measured with this CPU's int8 instructions passed; then int8, still torch-free
    assert _predict(folder, "")["runtime"] == "openvino"
    isa = int8.cpu_int8_isa()
    path = int8.write_contract(model, {"passed": False, "cpu_int8_isa": isa, "max_abs_dp": 0.29})
    assert _predict(folder, "")["runtime"] == "openvino"
    failed = _predict(folder, "openvino-int8")["warnings"][0]
    assert "failed its accuracy check" in failed and "up to 0.29" in failed
    int8.write_contract(model, {"passed": True, "cpu_int8_isa": isa})
    try:
        auto = _predict(folder, "")
        assert auto["runtime"] == "openvino-int8" and not auto["torch"] and auto["findings"] == explicit["findings"]
        assert not any("int8" in w for w in auto["warnings"])
    finally:
        path.unlink()


@pytest.mark.slow
def test_cli_explicit_int8_without_nncf_and_model_is_one_line(tmp_path) -> None:
    """A fresh cache, nncf hidden from the child: exit 2, one ``error:`` line, no traceback."""
    if not rt.installed("openvino"):
        pytest.skip("openvino (and onnx, to export) not installed")
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import importlib.util as u\n_f = u.find_spec\n"
        "u.find_spec = lambda name, *a, **k: None if name == 'nncf' else _f(name, *a, **k)\n")
    env = _env(tmp_path / "cache")
    env["PYTHONPATH"] = f"{hide}{os.pathsep}{ROOT}"
    out = subprocess.run([sys.executable, "-m", "medmm", "predict", str(FILE_JPEG), "--runtime", "openvino-int8"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if not ln.startswith(("W", "INFO", "WARNING"))]
    assert lines == [lines[0]] and lines[0].startswith("error: no int8 image encoder is cached"), out.stderr[-2000:]
    assert "Traceback" not in out.stderr


FILE_JPEG = EXAMPLES / "01_child_normal.jpeg"


@pytest.mark.slow
def test_explanations_never_read_the_int8_graph(int8_cache, monkeypatch) -> None:
    """Grad-CAM and occlusion under openvino-int8: the int8 session runs for the prediction only; the maps equal
    those of fp32 openvino (gradients in torch, forward-only passes through the fp32 graph)."""
    from medmm.explain import explain
    from medmm.pipeline import Pipeline

    folder, _ = int8_cache
    monkeypatch.setenv(rt.CACHE_ENV, str(folder))
    q, fp = Pipeline.from_checkpoint(runtime="openvino-int8"), Pipeline.from_checkpoint(runtime="openvino")
    assert q.runtime.reference is not None and fp.runtime.reference is None
    calls = []
    session = q.runtime.image
    real_run = session.run
    monkeypatch.setattr(session, "run", lambda feeds: (calls.append(1), real_run(feeds))[1])
    for method in ("gradcam", "occlusion"):
        inputs_q, inputs_fp = q.prepare([FILE_JPEG]), fp.prepare([FILE_JPEG])
        pred_q = q.predict_prepared(inputs_q)
        assert len(calls) == 1          # the prediction read the int8 graph once
        calls.clear()
        a = explain(q, inputs_q, pred_q, finding="Pneumonia", method=method)
        b = explain(fp, inputs_fp, fp.predict_prepared(inputs_fp), finding="Pneumonia", method=method)
        assert calls == [], method      # the explanation never did
        assert np.abs(np.asarray(a.attributions) - np.asarray(b.attributions)).max() <= 1e-5, method
