"""``openvino-int8``: the image encoder quantised to int8 by NNCF (post-training), calibrated on ../shared films.

Only the image encoder's OpenVINO graph is quantised; every other graph of the runtime (input gate, fusion head,
notes) runs as under ``openvino`` in fp32. Gradients (Grad-CAM, IG) stay in the torch model, and explanations'
forward-only passes (occlusion, the saliency check's curves) use the fp32 graph (``EncoderRuntime.reference``), so
no explanation reads the int8 graph (``tests/test_int8.py``).

How: the fp32 ONNX graph that ``medmm.runtime`` exports -> ``openvino.Core.read_model`` -> ``nncf.quantize`` over a
calibration ``nncf.Dataset`` of films prepared exactly as the torch-free pipeline prepares them (``load_scan`` ->
``models.preprocess.to_model_array``, one view ``[1, 3, S, S]`` per item) -> ``openvino.save_model``. Films:
``per_source`` from each of ``CALIBRATION_SOURCES`` (the training loaders' records), drawn with a fixed seed.

``VARIANTS``: the quantisation settings, stated before any was measured; ``scripts/int8_check.py`` builds the first
and tries the next only when the one before fails the contract (each one's result is written, none is tuned).

Cache: a folder beside the fp32 graph, ``int8_<fp32 graph's stem>_<key>``, the key over the calibration set's
fingerprint (names and contents of the films), the nncf version and the variant: a retrained checkpoint (a new fp32
graph), another calibration set, another nncf or variant gives a fresh folder. It is built under a temporary name and
renamed into place (concurrent builders never expose half a model). It holds ``model.xml``/``.bin``,
``calibration.json`` (variant, films, versions) and, once ``scripts/int8_check.py`` has measured it,
``contract_<isa>.json`` (one per int8 instruction set measured: ``vnni``, ``avx512``, ...).

The accuracy contract (issue 28, item 2): against fp32 OpenVINO, max |delta p| <= ``MAX_ABS_DP`` over every ../shared
film and the bench inputs, AUC change <= ``MAX_AUC_CHANGE`` on Kermany and nih_sample. ``auto`` picks
``openvino-int8`` only for a cached model whose ``contract_<isa>.json`` for this CPU's int8 instructions
(``cpu_int8_isa``) passed; otherwise it keeps fp32 ``openvino``. An explicit ``--runtime openvino-int8`` takes the cached
model (warning when its contract did not pass here), else quantises one now (needs nncf and the shared films), else
stops with one line (``Int8Unavailable``).

Torch-free until a model has to be quantised (``import nncf`` imports torch): finding a cached model, reading its
contract and opening it need openvino only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medmm.runtime import RuntimeUnavailable
from medmm.runtime.cache import write_atomic

log = logging.getLogger(__name__)

NAME = "openvino-int8"
REQUIREMENTS_FILE = "requirements-int8.txt"
MAX_ABS_DP = 0.01          # issue 28: max |delta p| vs fp32 OpenVINO, every finding, every film checked
MAX_AUC_CHANGE = 0.002     # issue 28: |AUC(int8) - AUC(fp32)| on Kermany and nih_sample
CALIBRATION_SOURCES = ("kermany", "covid", "nih")
CALIBRATION_SEED = 0
INT8_VERSION = 1           # bump when what a cached int8 folder holds changes meaning
MODEL_FILE = "model.xml"
CONTRACT_FILE = "contract_{isa}.json"   # one per int8 instruction set it was measured with
CALIBRATION_FILE = "calibration.json"
PREFIX = "int8_"
ISA_ENV = "ONEDNN_MAX_CPU_ISA"   # oneDNN's (and OpenVINO's CPU plugin's) cap on the instruction set it may use

# Stated before measuring, tried in this order (scripts/int8_check.py): NNCF's defaults; then the two standard
# accuracy levers of NNCF's post-training guide - the stem convolution (it reads the film itself) kept in fp32 with
# the slower, exact bias correction; then those with the "mixed" preset (asymmetric activations) on twice the films.
VARIANTS: tuple[dict[str, Any], ...] = (
    {"name": "default", "preset": "performance", "fast_bias_correction": True, "ignore_stem": False,
     "per_source": 100},
    {"name": "stem_fp32", "preset": "performance", "fast_bias_correction": False, "ignore_stem": True,
     "per_source": 100},
    {"name": "mixed_stem_fp32", "preset": "mixed", "fast_bias_correction": False, "ignore_stem": True,
     "per_source": 200},
    # added after a 20-films-per-folder smoke run showed the three above failing (docs/bench.md, "int8"): the last
    # lever the issue names, the first and the last convolution (conv_head, which makes the features) in fp32
    {"name": "stem_head_fp32", "preset": "performance", "fast_bias_correction": False, "ignore_stem": True,
     "ignore_head": True, "per_source": 100},
)


class Int8Unavailable(RuntimeUnavailable):
    """No int8 model can be found or built here; the message (one line) says why and what to install or provide."""


# ============================================================================================ what this CPU runs
def nncf_installed() -> bool:
    """nncf importable (looked up, not imported: importing it imports torch)."""
    return importlib.util.find_spec("nncf") is not None


def nncf_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("nncf")
    except Exception:  # noqa: BLE001 - absent or broken: no version
        return None


# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA) -> the int8 class below; a cap only lowers what the CPU has
_ISA_CAPS = {"sse41": "none", "avx": "none", "avx2": "avx2", "avx2_vnni": "vnni", "avx2_vnni_2": "vnni",
             "avx512_core": "avx512", "avx512_core_vnni": "vnni", "avx512_core_bf16": "vnni",
             "avx10_1_512": "vnni", "avx512_core_fp16": "vnni", "avx512_core_amx": "amx",
             "avx10_1_512_amx": "amx", "avx512_core_amx_fp16": "amx", "avx10_1_512_amx_fp16": "amx", "all": "amx"}
_ISA_RANK = ("none", "avx2", "avx512", "vnni", "amx")


def cpu_int8_isa(cpuinfo: str | None = None, cap: str | None = None) -> str:
    """The int8 dot-product instructions OpenVINO's CPU plugin may use here: ``amx`` | ``vnni`` (AVX-512 VNNI or
    AVX-VNNI) | ``avx512`` (AVX-512 without VNNI) | ``avx2`` | ``none``; ``unknown`` without ``/proc/cpuinfo``.
    ``$ONEDNN_MAX_CPU_ISA`` (``cap``) lowers it as it lowers the plugin's kernels."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            return "unknown"
    have = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")),
                    []))
    isa = ("amx" if "amx_int8" in have else "vnni" if {"avx512_vnni", "avx_vnni"} & have
           else "avx512" if "avx512bw" in have else "avx2" if "avx2" in have else "none")
    cap = (os.environ.get(ISA_ENV, "") if cap is None else cap).strip().lower()
    if cap in _ISA_CAPS:
        isa = min(isa, _ISA_CAPS[cap], key=_ISA_RANK.index)
    return isa


# ============================================================================================ calibration films
@dataclass(frozen=True)
class CalibrationSet:
    """The films an int8 model was calibrated on, and their fingerprint (names and contents)."""

    root: Path
    files: tuple[Path, ...]

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for path in self.files:
            h.update(_relative(path, self.root).encode() + b"\0")
            h.update(hashlib.sha256(Path(path).read_bytes()).digest())
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "n_films": len(self.files),
                "films": [_relative(p, self.root) for p in self.files]}


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return Path(path).name


def calibration_films(per_source: int = VARIANTS[0]["per_source"], root: Path | None = None,
                      sources: Sequence[str] = CALIBRATION_SOURCES, seed: int = CALIBRATION_SEED) -> CalibrationSet:
    """``per_source`` films of each source (the training loaders' records: Kermany, the COVID collection's labelled
    X-rays, NIH adults), drawn with ``seed``; ``Int8Unavailable`` without the shared data."""
    from medmm.training import data

    root = Path(root or data.SHARED_DATA)
    loaders = {"kermany": lambda: data.kermany_records(root / "kermany224"),
               "covid": lambda: data.covid_records(root / "covid_notes"),
               "nih": lambda: data.nih_records(root / "nih_adult")}
    rng = np.random.default_rng(seed)
    files: list[Path] = []
    for source in sources:
        try:
            paths = sorted({r.image for r in loaders[source]() if r.image})
        except OSError:
            paths = []
        if not paths:
            raise Int8Unavailable(f"no {source} films under {root} to calibrate the int8 image encoder on; set "
                                  f"MEDMM_SHARED_DATA to the shared data folder, or use --runtime openvino")
        pick = rng.choice(len(paths), min(per_source, len(paths)), replace=False)
        files += [Path(paths[i]) for i in sorted(pick)]
    return CalibrationSet(root, tuple(files))


def film_pixels(path: str | Path, preprocessing: Any) -> np.ndarray:
    """One film as the torch-free pipeline feeds the image encoder: ``[1, 3, S, S]`` float32."""
    from medmm.io import load_scan
    from medmm.models.preprocess import to_model_array

    return to_model_array(load_scan(path).pixels, preprocessing)[None]


# ============================================================================================ cache
def model_key(calibration_fingerprint: str, nncf: str | None, variant: dict[str, Any]) -> str:
    body = json.dumps([INT8_VERSION, calibration_fingerprint, nncf, variant], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def model_folder(fp32_graph: Path, key: str) -> Path:
    """Where the int8 model of ``fp32_graph`` for ``key`` lives: beside it, named by its stem (its own key)."""
    fp32_graph = Path(fp32_graph)
    return fp32_graph.parent / f"{PREFIX}{fp32_graph.stem}_{key}"


def cached_models(fp32_graph: Path) -> list[Path]:
    """Every complete int8 folder of ``fp32_graph``, newest model first."""
    fp32_graph = Path(fp32_graph)
    found = [p for p in fp32_graph.parent.glob(f"{PREFIX}{fp32_graph.stem}_*")
             if (p / MODEL_FILE).is_file() and (p / MODEL_FILE).with_suffix(".bin").is_file()]
    return sorted(found, key=lambda p: (p / MODEL_FILE).stat().st_mtime, reverse=True)


def read_contract(folder: Path, isa: str | None = None) -> dict[str, Any] | None:
    """The contract measured with ``isa`` (default: this CPU's, ``cpu_int8_isa``), or None."""
    try:
        return json.loads((Path(folder) / CONTRACT_FILE.format(isa=isa or cpu_int8_isa())).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_contract(folder: Path, result: dict[str, Any]) -> Path:
    """``result`` (``scripts/int8_check.py``'s, with ``passed`` and ``cpu_int8_isa``) beside the model, atomically."""
    path = Path(folder) / CONTRACT_FILE.format(isa=result["cpu_int8_isa"])
    write_atomic(path, (json.dumps(result, indent=1, sort_keys=True, default=str) + "\n").encode())
    return path


def contract_holds_here(contract: dict[str, Any] | None) -> bool:
    """The contract passed, and was measured with this CPU's int8 instructions (the int8 kernels differ by
    instruction set: without VNNI the CPU plugin multiplies in 16 bits, which can saturate where VNNI does not)."""
    return bool(contract and contract.get("passed") is True and contract.get("cpu_int8_isa") == cpu_int8_isa())


def auto_model(fp32_graph: Path) -> Path | None:
    """The int8 folder ``auto`` may use for ``fp32_graph``: the newest whose contract holds here, else None."""
    return next((p for p in cached_models(fp32_graph) if contract_holds_here(read_contract(p))), None)


# ============================================================================================ quantisation
def quantize(fp32_graph: Path, preprocessing: Any, variant: dict[str, Any] = VARIANTS[0],
             films: CalibrationSet | None = None) -> Path:
    """The int8 folder of ``fp32_graph`` for ``variant`` calibrated on ``films`` (default: ``calibration_films``
    with the variant's ``per_source``): cached, else quantised now and written atomically. Needs nncf."""
    if not nncf_installed():
        raise Int8Unavailable(f"the {NAME} runtime needs nncf to quantise the image encoder: "
                              f"pip install -r {REQUIREMENTS_FILE} (or use --runtime openvino)")
    films = films or calibration_films(variant["per_source"])
    folder = model_folder(fp32_graph, model_key(films.fingerprint, nncf_version(), variant))
    if (folder / MODEL_FILE).is_file():
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        import openvino as ov

        model = quantize_graph(fp32_graph, [film_pixels(p, preprocessing) for p in films.files], variant)
        ov.save_model(model, str(tmp / MODEL_FILE), compress_to_fp16=False)
        info = {"fp32_graph": Path(fp32_graph).name, "nncf": nncf_version(), "openvino": ov.__version__,
                "variant": variant, "int8_version": INT8_VERSION, "calibration": films.to_dict()}
        (tmp / CALIBRATION_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, folder)   # atomic; fails when another process got there first (theirs is the same)
        except OSError:
            if not (folder / MODEL_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("quantised %s -> %s (%s, %d films)", Path(fp32_graph).name, folder.name, variant["name"],
             len(films.files))
    return folder


def quantize_graph(fp32_graph: Path, calibration: list[np.ndarray], variant: dict[str, Any]) -> Any:
    """``nncf.quantize`` of the fp32 graph over ``calibration`` (``[1, 3, S, S]`` items) with ``variant``."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_graph))
    # the first convolution in topological order is the stem (it reads the film), the last one the head conv
    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    names = convs[:1] * bool(variant["ignore_stem"]) + convs[-1:] * bool(variant.get("ignore_head"))
    ignored = nncf.IgnoredScope(names=names) if names else None
    return nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                         preset=nncf.QuantizationPreset(variant["preset"]), ignored_scope=ignored,
                         fast_bias_correction=variant["fast_bias_correction"])


# ============================================================================================ the runtime's hook
def image_model(fp32_graph: Path, preprocessing: Any, quantise: bool = True) -> Path:
    """The int8 model file ``--runtime openvino-int8`` opens for ``fp32_graph``: the cached one whose contract
    holds here, else the newest cached one (with a warning), else (``quantise``) one quantised now (nncf and the
    shared films); ``Int8Unavailable`` (one line) when none can be had."""
    folder = auto_model(fp32_graph)
    if folder is None:
        cached = cached_models(fp32_graph)
        if cached:
            folder = cached[0]
            contract = read_contract(folder)
            why = (f"has not been measured with {cpu_int8_isa()} int8 instructions (scripts/int8_check.py)"
                   if contract is None else "failed")
            log.warning("%s: the int8 model's accuracy contract %s; auto would run openvino", NAME, why)
        elif not quantise:
            raise Int8Unavailable(f"no int8 image encoder is cached in {Path(fp32_graph).parent}: build one with "
                                  f"`python -m medmm warmup --runtime {NAME}` or scripts/int8_check.py")
        elif not nncf_installed():
            raise Int8Unavailable(f"no int8 image encoder is cached in {Path(fp32_graph).parent} and nncf is not "
                                  f"installed to build one: pip install -r {REQUIREMENTS_FILE}, or use --runtime "
                                  f"openvino")
        else:
            folder = quantize(fp32_graph, preprocessing)
    return folder / MODEL_FILE


def unchecked_contract(encoders: Any) -> dict[str, Any] | None:
    """For a pipeline's ``openvino-int8`` encoders (``EncoderRuntime``): None when the int8 model it opened has a
    contract that holds on this CPU, else what is known (the contract measured with this CPU's int8 instructions,
    ``{}`` when none was): every prediction then says so (``caveats.int8_unchecked``)."""
    model_file = getattr(encoders, "files", {}).get("image_encoder")
    contract = read_contract(Path(model_file).parent) if model_file else None
    return None if contract_holds_here(contract) else (contract or {})


def describe(model_file: Path) -> dict[str, Any]:
    """What the bench says about an int8 model: its folder, variant, contract verdict, this CPU's int8 ISA."""
    folder = Path(model_file).parent
    contract = read_contract(folder)
    try:
        variant = json.loads((folder / CALIBRATION_FILE).read_text(encoding="utf-8")).get("variant", {}).get("name")
    except (OSError, ValueError):
        variant = None
    return {"int8_model": folder.name, "variant": variant,
            "contract_passed": None if contract is None else contract.get("passed"),
            "contract_cpu_int8_isa": None if contract is None else contract.get("cpu_int8_isa"),
            "cpu_int8_isa": cpu_int8_isa()}


__all__ = ["CALIBRATION_SOURCES", "CalibrationSet", "Int8Unavailable", "MAX_ABS_DP", "MAX_AUC_CHANGE", "NAME",
           "VARIANTS", "auto_model", "cached_models", "calibration_films", "contract_holds_here", "cpu_int8_isa",
           "describe", "film_pixels", "image_model", "model_folder", "nncf_installed", "quantize", "read_contract",
           "write_contract"]
