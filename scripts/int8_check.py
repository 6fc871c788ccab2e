"""Build ``openvino-int8``'s image encoder and measure its accuracy contract and speed (issue 28, item 2).

    .venv/bin/python scripts/int8_check.py --out docs/int8.json
    ONEDNN_MAX_CPU_ISA=AVX512_CORE .venv/bin/python scripts/int8_check.py --out docs/int8_avx512.json   # no VNNI
    .venv/bin/python scripts/int8_check.py --time-only --variants default --out ...   # speed only

For each of ``medmm.runtime.int8.VARIANTS`` in its stated order (the next only when the one before fails): quantise
(calibration films from ../shared, fixed seed), then against fp32 OpenVINO (both image encoders feed the same fp32
fusion head, as in a prediction):

* max |delta p| per finding over every film under ../shared (all sources, image only) and over the bench inputs
  through ``Pipeline.predict`` with and without notes;
* AUC fp32 vs int8 per finding on Kermany and nih_sample (their labels; findings with both classes present);
* decisions flipped at the checkpoint's stored thresholds (p >= threshold), per finding;
* passed = max |delta p| <= 0.01 everywhere and every AUC change <= 0.002.

Then the image encoder p50 (one 224 px view, 1 thread, interleaved as ``medmm bench`` times it) for torch eager,
OpenVINO fp32 and OpenVINO int8. Writes ``contract_<isa>.json`` into each measured model's folder (``auto`` reads
it) and the whole result to ``--out``. ``--limit N`` takes N films per source (a smoke run: its verdict is written
as not passed, since it did not look at every film). Use ``MEDMM_CACHE_DIR`` to keep the models out of the
default cache while trying.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SOURCES_FOR_AUC = ("kermany", "nih_sample")


def films(limit: int | None) -> dict[str, list[Path]]:
    """Every image file under the shared data folder, by its top folder (``limit`` per folder for a smoke run)."""
    from medmm.training.data import SHARED_DATA

    out: dict[str, list[Path]] = {}
    for path in sorted(p for p in SHARED_DATA.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png", ".dcm")):
        out.setdefault(path.relative_to(SHARED_DATA).parts[0], []).append(path)
    return {k: v[:limit] if limit else v for k, v in out.items()}


def labelled(limit: int | None) -> dict[str, tuple[list[str], np.ndarray]]:
    """Kermany and nih_sample: (image paths, label matrix ``[N, K]`` with NaN for unknown)."""
    from medmm.training.data import label_matrix, load_records

    out = {}
    for source in SOURCES_FOR_AUC:
        records = [r for r in load_records((source,)) if r.image][:limit or None]
        out[source] = ([r.image for r in records], label_matrix(records))
    return out


def temperatures(meta) -> np.ndarray:
    """The checkpoint's calibration temperatures ``[K]`` float32, in the order of its findings."""
    return np.array([meta.temperatures[f] for f in meta.findings], np.float32)


def head_probabilities(graphs, temps: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image-only calibrated probabilities ``[N, K]`` float64, log-odds ``[N, K]``) of image features through the
    fp32 head: what the contract's Δp compares (also ``scripts/int8_diagnose.py``)."""
    logits, _ = graphs.head_outputs(features)
    return (1 / (1 + np.exp(-(logits / temps)))).astype(np.float64), logits


def probabilities(graphs, meta, encode, paths: list, batch: int = 16) -> np.ndarray:
    """Image-only calibrated probabilities ``[N, K]``: ``encode`` (fp32 or int8 image graph) -> the fp32 head."""
    from medmm.runtime.int8 import film_pixels

    temps = temperatures(meta)
    out = []
    for i in range(0, len(paths), batch):
        x = np.concatenate([film_pixels(p, graphs.prep) for p in paths[i:i + batch]])
        out.append(head_probabilities(graphs, temps, encode(x))[0])
    return np.concatenate(out)


def auc_change(labels: np.ndarray, p32: np.ndarray, p8: np.ndarray, findings) -> dict[str, dict[str, float]]:
    from medmm.training.metrics import roc_auc

    out = {}
    for j, f in enumerate(findings):
        m = ~np.isnan(labels[:, j])
        if m.sum() < 10 or len(np.unique(labels[m, j])) < 2:
            continue
        a, b = roc_auc(labels[m, j], p32[m, j]), roc_auc(labels[m, j], p8[m, j])
        out[f] = {"n": int(m.sum()), "auc_fp32": round(a, 6), "auc_int8": round(b, 6), "change": round(b - a, 6)}
    return out


def bench_inputs_dp(checkpoint: Path, model_file: Path) -> dict:
    """max |delta p| over the bench inputs with and without notes, through ``Pipeline.predict`` (fp32 openvino vs
    the same pipeline with the int8 image encoder)."""
    from medmm.pipeline import Pipeline
    from medmm.runtime.sessions import OvSession
    from medmm.tools.bench.inputs import TYPICAL_NOTES, bench_inputs

    fp32 = Pipeline.from_checkpoint(checkpoint, runtime="openvino")
    q = Pipeline.from_checkpoint(checkpoint, runtime="openvino")
    q.runtime.image = OvSession(model_file)
    worst, n = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="int8-check-") as tmp:
        files, _ = bench_inputs(Path(tmp))
        for path in files.values():
            for notes in (None, TYPICAL_NOTES):
                a, b = fp32.predict([path], notes), q.predict([path], notes)
                worst = max(worst, max(abs(a.findings[f] - b.findings[f]) for f in a.findings))
                n += 1
    return {"max_abs_dp": worst, "requests": n}


def measure(variant: dict, fp32_graph: Path, graphs, meta, checkpoint: Path, limit: int | None,
            fp32_cache: dict) -> dict:
    from medmm.runtime import int8
    from medmm.runtime.sessions import OvSession

    prep, findings = graphs.prep, meta.findings
    t = time.perf_counter()
    folder = int8.quantize(fp32_graph, prep, variant)
    built_s = time.perf_counter() - t
    q = OvSession(folder / int8.MODEL_FILE, threads=1)
    fp = graphs.encoders.image
    encode_q = lambda x: q.run({"pixels": x})  # noqa: E731
    encode_fp = lambda x: fp.run({"pixels": np.ascontiguousarray(x)})  # noqa: E731
    thresholds = np.array([meta.thresholds[f] for f in findings])
    dp = np.zeros(len(findings))
    flips = np.zeros(len(findings), int)
    n = 0
    by_folder = {}
    for name, paths in films(limit).items():
        if name not in fp32_cache:
            fp32_cache[name] = probabilities(graphs, meta, encode_fp, paths)
        p32, p8 = fp32_cache[name], probabilities(graphs, meta, encode_q, paths)
        d = np.abs(p8 - p32).max(0)
        by_folder[name] = {"films": len(paths), "max_abs_dp": round(float(d.max()), 6)}
        dp = np.maximum(dp, d)
        flips += ((p8 >= thresholds) != (p32 >= thresholds)).sum(0)
        n += len(paths)
    aucs = {}
    for source, (paths, labels) in labelled(limit).items():
        key = "auc:" + source
        if key not in fp32_cache:
            fp32_cache[key] = probabilities(graphs, meta, encode_fp, paths)
        aucs[source] = auc_change(labels, fp32_cache[key], probabilities(graphs, meta, encode_q, paths), findings)
    bench = bench_inputs_dp(checkpoint, folder / int8.MODEL_FILE)
    worst_auc = max((abs(v["change"]) for s in aucs.values() for v in s.values()), default=float("nan"))
    worst_dp = max(float(dp.max()), bench["max_abs_dp"])
    passed = bool(worst_dp <= int8.MAX_ABS_DP and worst_auc <= int8.MAX_AUC_CHANGE and not limit)
    return {"variant": variant, "model": folder.name, "quantise_s": round(built_s, 1), "films": n,
            "max_abs_dp": worst_dp, "max_abs_dp_by_finding": dict(zip(findings, map(float, dp))),
            "max_abs_dp_by_folder": by_folder, "bench_inputs": bench,
            "flips_at_thresholds": dict(zip(findings, map(int, flips))), "auc": aucs, "max_abs_auc_change": worst_auc,
            "limits": {"max_abs_dp": int8.MAX_ABS_DP, "max_abs_auc_change": int8.MAX_AUC_CHANGE},
            "smoke_run": bool(limit), "passed": passed, "cpu_int8_isa": int8.cpu_int8_isa(),
            "onednn_max_cpu_isa": os.environ.get(int8.ISA_ENV), "_folder": folder}


def timing(checkpoint: Path, model_file: Path | None, repeats: int) -> dict:
    """Image encoder p50/p95, batch 1, one 224 px view, 1 thread, interleaved: torch eager / openvino / int8."""
    import torch

    from medmm.pipeline import Pipeline
    from medmm.runtime.sessions import OvSession
    from medmm.tools.bench.inputs import bench_inputs
    from medmm.tools.bench.timing import time_interleaved

    torch.set_num_threads(1)
    pipes = {"torch": Pipeline.from_checkpoint(checkpoint, runtime="torch"),
             "openvino": Pipeline.from_checkpoint(checkpoint, runtime="openvino")}
    if model_file is not None:
        pipes["openvino-int8"] = q = Pipeline.from_checkpoint(checkpoint, runtime="openvino")
        q.runtime.image = OvSession(model_file, threads=1)
    pipes["openvino"].runtime.image = OvSession(pipes["openvino"].runtime.files["image_encoder"], threads=1)
    with tempfile.TemporaryDirectory(prefix="int8-time-") as tmp, torch.inference_mode():
        png = bench_inputs(Path(tmp))[0]["png"]
        inputs = {n: p.prepare([png]) for n, p in pipes.items()}
        fns = {n: (lambda p=p, i=inputs[n]: (i.view_cache.clear(), p.image_features(i))) for n, p in pipes.items()}
        out = time_interleaved(fns, repeats)
    base = out["torch"]["p50_ms"]
    return {n: {**v, "ratio_vs_torch": round(v["p50_ms"] / base, 3)} for n, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--out", default="docs/int8.json")
    ap.add_argument("--repeats", type=int, default=50, help="timed calls per runtime (interleaved)")
    ap.add_argument("--limit", type=int, default=None, help="films per folder (smoke run; never passes)")
    ap.add_argument("--time-only", action="store_true", help="only the speed of the first of --variants (built or "
                                                             "cached), no accuracy pass")
    ap.add_argument("--variants", default=None, help="comma list of variant names (default: every one, in order, "
                                                     "until one passes)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from medmm import runtime as rt
    from medmm.gate import load_gate
    from medmm.models.checkpoint import DEFAULT_CHECKPOINT, read_meta
    from medmm.runtime import int8
    from medmm.runtime.graphs import open_graphs

    checkpoint = Path(args.checkpoint or DEFAULT_CHECKPOINT)
    t0 = time.perf_counter()
    load = os.getloadavg()
    meta, gate = read_meta(checkpoint), load_gate(checkpoint)
    graphs = open_graphs(meta, "openvino", "cpu", gate, threads=1)
    if graphs is None:
        rt.warm(checkpoint)
        graphs = open_graphs(meta, "openvino", "cpu", gate, threads=1)
    fp32_graph = graphs.graphs.path("image")
    names = args.variants.split(",") if args.variants else [v["name"] for v in int8.VARIANTS]
    results, fp32_cache, chosen = [], {}, None
    for variant in (v for v in int8.VARIANTS if v["name"] in names):
        if args.time_only:
            chosen = int8.quantize(fp32_graph, graphs.prep, variant)
            break
        r = measure(variant, fp32_graph, graphs, meta, checkpoint, args.limit, fp32_cache)
        folder = r.pop("_folder")
        int8.write_contract(folder, r)
        results.append(r)
        print(f"{variant['name']}: max|dp| {r['max_abs_dp']:.4f} max|dAUC| {r['max_abs_auc_change']:.4f} "
              f"flips {sum(r['flips_at_thresholds'].values())} passed {r['passed']}", file=sys.stderr)
        chosen = folder
        if r["passed"]:
            break
    speed = timing(checkpoint, None if chosen is None else chosen / int8.MODEL_FILE, args.repeats)
    out = {"schema": "medmm-int8/1", "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%d"), "load_average_start": [round(x, 2) for x in load],
           "load_average_end": [round(x, 2) for x in os.getloadavg()], "machine": platform.processor() or
           platform.machine(), "cpu_int8_isa": int8.cpu_int8_isa(), "onednn_max_cpu_isa": os.environ.get(int8.ISA_ENV),
           "checkpoint_sha256": meta.weights_sha256, "nncf": int8.nncf_version(), "variants": results,
           "passed": any(r["passed"] for r in results), "chosen": results[-1]["variant"]["name"] if results else
           chosen and chosen.name,
           "image_encoder_1_thread": speed, "wall_s": round(time.perf_counter() - t0, 1)}
    Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n", encoding="utf-8")
    print(json.dumps({k: out[k] for k in ("passed", "chosen", "cpu_int8_isa")}), {n: v["p50_ms"] for n, v in
                                                                                   speed.items()}, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
