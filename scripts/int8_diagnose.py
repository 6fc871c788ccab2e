"""Why does the int8 image encoder fail its accuracy contract, and can accuracy-aware quantisation save it?

    python scripts/int8_diagnose.py diagnose          [--work DIR] [--per-folder 100]
    python scripts/int8_diagnose.py sensitivity       [--work DIR]     # one block int8 at a time; no conv int8
    python scripts/int8_diagnose.py accuracy-control  [--work DIR] [--max-drop 0.005]
    python scripts/int8_diagnose.py speed             [--work DIR] [--repeats 100] NAME=MODEL.xml ...

Issue 28's contract for ``--runtime openvino-int8``: max |Δp| <= 0.01 against fp32 OpenVINO on every ../shared film
(``scripts/int8_check.py``). The plain post-training variants (``medmm.runtime.int8.VARIANTS``) fail it by 0.29-0.53.
These steps find out why and try NNCF's accuracy-aware quantisation (docs/bench.md, "int8"; results in
docs/int8_diagnose.json):

* **Dev set**: ``--per-folder`` films (default 100) from each calibration source's folder (kermany224, covid_notes,
  nih_adult), drawn with seed 1 from ``int8_check.films``; some are calibration films too (recorded, not removed).
  Probabilities as ``int8_check.probabilities``: encoder -> fp32 head graph -> sigmoid(logit / T).
* ``diagnose``: the ``stem_head_fp32`` variant against fp32 on the dev set: |Δp| (max over findings), the features'
  relative error, the logit change, and whether the head amplifies the error (the same error norm in a random
  direction, the gain along the error direction) or a constant bias explains it.
* ``sensitivity``: each block's convolutions the only ones in int8 (plus the ops NNCF always quantises: residual
  adds, the pool's input), and the floor with every convolution in fp32.
* ``accuracy-control``: ``nncf.quantize_with_accuracy_control`` with ``stem_head_fp32``'s settings, validation metric
  1 - max |Δp| on the dev set, ``--max-drop`` absolute: how many operations it must put back to fp32.
* ``speed``: encoder p50 (batch 1, one thread, interleaved calls) of fp32 OpenVINO and the given models.

Every step writes ``DIR/<step>.json`` and prints it; intermediate arrays are cached in ``DIR`` (default
``/tmp/medmm-int8-diagnose``). Set ``MEDMM_CACHE_DIR`` to a private folder so that no other process's ``auto`` sees
the int8 models built here. Needs nncf (``requirements-int8.txt``) and ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

DEV_FOLDERS = ("kermany224", "covid_notes", "nih_adult")
DEV_SEED = 1


class Setup:
    """The checkpoint's fp32 graphs (OpenVINO, one thread), the dev films' pixels and their fp32 probabilities."""

    def __init__(self, work: Path, per_folder: int) -> None:
        import int8_check

        from medmm import runtime
        from medmm.gate import load_gate
        from medmm.models.checkpoint import DEFAULT_CHECKPOINT, read_meta
        from medmm.runtime.graphs import open_graphs

        self.work, self.per_folder = work, per_folder
        work.mkdir(parents=True, exist_ok=True)
        self.meta, gate = read_meta(DEFAULT_CHECKPOINT), load_gate(DEFAULT_CHECKPOINT)
        graphs = open_graphs(self.meta, "openvino", "cpu", gate, threads=1)
        if graphs is None:
            runtime.warm(DEFAULT_CHECKPOINT)
            graphs = open_graphs(self.meta, "openvino", "cpu", gate, threads=1)
        self.graphs, self.fp32_graph = graphs, graphs.graphs.path("image")
        self.temps = int8_check.temperatures(self.meta)
        films = int8_check.films(None)
        rng = np.random.default_rng(DEV_SEED)
        self.dev = [p for f in DEV_FOLDERS for p in
                    (films[f][i] for i in sorted(rng.choice(len(films[f]), per_folder, replace=False)))]
        self.folders = np.repeat(DEV_FOLDERS, per_folder)

    def cached(self, name: str, compute) -> np.ndarray:
        path = self.work / f"{name}_{self.per_folder}.npy"
        if path.exists():
            return np.load(path)
        arr = compute()
        np.save(path, arr)
        return arr

    def pixels(self) -> np.ndarray:
        from medmm.runtime import int8

        return self.cached("dev_pixels", lambda: np.concatenate([int8.film_pixels(p, self.graphs.prep)
                                                                 for p in self.dev]))

    def calibration(self) -> np.ndarray:
        from medmm.runtime import int8

        films = int8.calibration_films(int8.VARIANTS[3]["per_source"])
        return self.cached("calibration_pixels", lambda: np.concatenate([int8.film_pixels(p, self.graphs.prep)
                                                                         for p in films.files]))

    def probabilities(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, log-odds) as the contract compares them (``int8_check.head_probabilities``)."""
        import int8_check

        return int8_check.head_probabilities(self.graphs, self.temps, features)

    def features(self, run, x: np.ndarray, batch: int = 16) -> np.ndarray:
        return np.concatenate([run(np.ascontiguousarray(x[i:i + batch]))
                               for i in range(0, len(x), batch)]).astype(np.float64)

    def fp32(self) -> tuple[np.ndarray, np.ndarray]:
        f32 = self.cached("f32", lambda: self.features(lambda a: self.graphs.encoders.image.run({"pixels": a}),
                                                       self.pixels()))
        return f32, self.probabilities(f32)[0]


def stats(d: np.ndarray) -> dict[str, float]:
    return {"median": round(float(np.median(d)), 5), "p90": round(float(np.percentile(d, 90)), 5),
            "p99": round(float(np.percentile(d, 99)), 5), "max": round(float(d.max()), 5),
            "n>0.01": int((d > 0.01).sum()), "n>0.005": int((d > 0.005).sum())}


def _compiled(model: Any):
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})


def _quantise(s: Setup, ignore: list[str]) -> Any:
    import nncf
    import openvino as ov

    cal = s.calibration()
    return nncf.quantize(ov.Core().read_model(str(s.fp32_graph)), nncf.Dataset([cal[i:i + 1] for i in range(len(cal))]),
                         subset_size=len(cal), preset=nncf.QuantizationPreset.PERFORMANCE, fast_bias_correction=False,
                         ignored_scope=nncf.IgnoredScope(names=ignore) if ignore else None)


def _convolutions(s: Setup, kinds: tuple[str, ...] = ("Convolution", "GroupConvolution")) -> list[str]:
    import openvino as ov

    model = ov.Core().read_model(str(s.fp32_graph))
    return [o.get_friendly_name() for o in model.get_ordered_ops() if o.get_type_name() in kinds]


def _dev_error(s: Setup, model: Any) -> dict[str, Any]:
    f32, p32 = s.fp32()
    cm = _compiled(model)
    f8 = s.features(lambda a: cm(a)[0], s.pixels())
    dp = np.abs(s.probabilities(f8)[0] - p32).max(1)
    rel = np.linalg.norm(f8 - f32, axis=1) / np.linalg.norm(f32, axis=1)
    fq = sum(o.get_type_name() == "FakeQuantize" for o in model.get_ordered_ops())
    return {"fake_quantize": int(fq), "feature_rel_err_median": round(float(np.median(rel)), 4),
            "dp_median": round(float(np.median(dp)), 4), "dp_max": round(float(dp.max()), 4),
            "n>0.005": int((dp > 0.005).sum())}


def diagnose(s: Setup) -> dict[str, Any]:
    from medmm.runtime import int8
    from medmm.runtime.sessions import OvSession

    f32, p32 = s.fp32()
    l32 = s.probabilities(f32)[1]
    folder = int8.quantize(s.fp32_graph, s.graphs.prep, int8.VARIANTS[3])     # stem_head_fp32
    q = OvSession(folder / int8.MODEL_FILE, threads=1)
    f8 = s.features(lambda a: q.run({"pixels": a}), s.pixels())
    p8, l8 = s.probabilities(f8)
    dp = np.abs(p8 - p32).max(1)
    err = f8 - f32
    rel = np.linalg.norm(err, axis=1) / np.linalg.norm(f32, axis=1)
    out: dict[str, Any] = {"variant": int8.VARIANTS[3]["name"], "dp": stats(dp),
                           "dp_by_folder": {f: stats(dp[s.folders == f]) for f in DEV_FOLDERS},
                           "feature_rel_err": stats(rel),
                           "dlogit_over_T": stats((np.abs(l8 - l32) / s.temps).max(1))}
    # a constant bias? remove the mean feature error
    out["dp_without_mean_feature_error"] = stats(np.abs(s.probabilities(f8 - err.mean(0))[0] - p32).max(1))
    # does the head amplify it? the same error norm in a random direction, and the logit gain along each direction
    rng = np.random.default_rng(0)
    r = rng.standard_normal(f32.shape)
    r *= (np.linalg.norm(err, axis=1) / np.linalg.norm(r, axis=1))[:, None]
    out["dp_random_direction_same_norm"] = stats(np.abs(s.probabilities(f32 + r)[0] - p32).max(1))
    eps = 1e-3

    def gain(direction: np.ndarray) -> float:
        moved = (np.abs(s.probabilities(f32 + eps * direction)[1] - l32) / s.temps).max(1)
        return float(np.median(moved / (eps * np.linalg.norm(direction, axis=1))))

    out["logit_gain_error_direction"] = round(gain(err), 4)
    out["logit_gain_random_direction"] = round(gain(r), 4)
    out["feature_norm_median"] = round(float(np.median(np.linalg.norm(f32, axis=1))), 3)
    return out


def sensitivity(s: Setup) -> dict[str, Any]:
    convs = _convolutions(s)

    def block(name: str) -> str:
        return "stem" if name.startswith("/conv_stem") else "head" if name.startswith("/conv_head") else name.split("/")[2]

    blocks = list(dict.fromkeys(block(n) for n in convs))
    out: dict[str, Any] = {"only_this_block_int8": {}}
    for b in blocks:
        out["only_this_block_int8"][b] = _dev_error(s, _quantise(s, [n for n in convs if block(n) != b]))
        print(b, out["only_this_block_int8"][b], flush=True)
    floor = _quantise(s, convs)
    out["no_convolution_int8"] = _dev_error(s, floor)
    out["no_convolution_int8"]["quantised_inputs_of"] = dict(Counter(
        t.get_node().get_type_name() for o in floor.get_ordered_ops() if o.get_type_name() == "FakeQuantize"
        for t in o.output(0).get_target_inputs()))
    return out


def accuracy_control(s: Setup, max_drop: float) -> dict[str, Any]:
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    x, (_, p32), cal = s.pixels(), s.fp32(), s.calibration()
    convs = _convolutions(s, ("Convolution",))
    calls = {"n": 0, "films": 0}

    def validation_fn(compiled, data) -> tuple[float, list[float]]:
        items = list(data)
        xs, idx = np.concatenate([it[0] for it in items]), np.array([it[1] for it in items])
        dp = np.abs(s.probabilities(s.features(lambda a: compiled(a)[0], xs))[0] - p32[idx]).max(1)
        calls["n"] += 1
        calls["films"] += len(items)
        return float(1 - dp.max()), [float(v) for v in 1 - dp]

    t = time.perf_counter()
    q = nncf.quantize_with_accuracy_control(
        ov.Core().read_model(str(s.fp32_graph)), nncf.Dataset([cal[i:i + 1] for i in range(len(cal))]),
        nncf.Dataset([(x[i:i + 1], i) for i in range(len(x))]), validation_fn, max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(cal),
        fast_bias_correction=False, ignored_scope=nncf.IgnoredScope(names=[convs[0], convs[-1]]),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(ranking_subset_size=100,
                                                                                 num_ranking_workers=1))
    wall = time.perf_counter() - t
    ov.save_model(q, str(s.work / "accuracy_control.xml"), compress_to_fp16=False)
    return {"max_drop": max_drop, "wall_s": round(wall, 1), "validation_calls": calls, **_dev_error(s, q),
            "model": str(s.work / "accuracy_control.xml")}


def speed(s: Setup, repeats: int, models: list[str]) -> dict[str, Any]:
    from medmm.runtime.sessions import OvSession
    from medmm.tools.bench.timing import time_interleaved

    x = np.ascontiguousarray(s.pixels()[:1])
    sessions = {"fp32": OvSession(s.fp32_graph, threads=1)}
    for arg in models:
        name, path = arg.split("=", 1)
        sessions[name] = OvSession(Path(path), threads=1)
    load = [round(v, 2) for v in os.getloadavg()]
    out = time_interleaved({k: (lambda v=v: v.run({"pixels": x})) for k, v in sessions.items()}, repeats)
    return {"load_start": load, "load_end": [round(v, 2) for v in os.getloadavg()],
            "p50_ms": {k: v["p50_ms"] for k, v in out.items()},
            "speedup_vs_fp32": {k: round(out["fp32"]["p50_ms"] / v["p50_ms"], 3) for k, v in out.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=["diagnose", "sensitivity", "accuracy-control", "speed"])
    ap.add_argument("models", nargs="*", help="speed: NAME=MODEL.xml to time beside fp32 OpenVINO")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medmm-int8-diagnose"))
    ap.add_argument("--per-folder", type=int, default=100, help="dev films per calibration source's folder")
    ap.add_argument("--max-drop", type=float, default=0.005, help="accuracy-control: allowed rise of max |dp|")
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args(argv)
    import nncf

    nncf.set_log_level(logging.WARNING)     # not one line per operation left in fp32
    s = Setup(args.work, args.per_folder)
    t = time.perf_counter()
    result = {"diagnose": lambda: diagnose(s), "sensitivity": lambda: sensitivity(s),
              "accuracy-control": lambda: accuracy_control(s, args.max_drop),
              "speed": lambda: speed(s, args.repeats, args.models)}[args.step]()
    result = {"step": args.step, "dev_films": len(s.dev), "per_folder": args.per_folder, **result,
              "wall_s_total": round(time.perf_counter() - t, 1)}
    text = json.dumps(result, indent=1)
    (args.work / f"{args.step}.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
