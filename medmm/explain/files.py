"""The files of ``python -m medmm explain --out DIR``: what the CLI writes for an explanation. The library computes
(``medmm.explain.attribution``) and draws (``medmm.explain.render``); only this module touches the disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from medmm.explain.methods import METHOD_NAMES

if TYPE_CHECKING:
    from medmm.explain.explanation import Explanation
    from medmm.pipeline import ModelInputs, Pipeline
    from medmm.prediction import Prediction


def cli_explain(pipeline: "Pipeline", images: Sequence[str | Path], notes: str | None, finding: str | None = None,
                method: str = "gradcam", out_dir: str | Path = "explain_out", **explain_kwargs: Any) -> int:
    """``python -m medmm explain``: explain one request, write its files (:func:`write_explanation`) into
    ``out_dir`` and print one line; returns the exit code (0).

    The randomisation and faithfulness checks run only with ``sanity=True`` in ``explain_kwargs`` (CLI
    ``--sanity``: they take seconds); ``explain_kwargs`` go to ``explain``. Bad input raises ScanError /
    InputError / ExplainError (exit code 2 in the CLI).
    """
    from medmm.explain.attribution import explain

    inputs = pipeline.prepare([Path(p) for p in images], notes)
    prediction = pipeline.predict_prepared(inputs)
    exp = explain(pipeline, inputs, prediction, finding=finding, method=method, **explain_kwargs)
    out = Path(out_dir)
    write_explanation(out, exp, inputs, prediction)
    modality = ", ".join(f"{k[6:]} {v:.0%}" for k, v in exp.modality.items() if k.startswith("share_"))
    print(f"{exp.finding}: p={exp.probability:.3f}; {METHOD_NAMES[exp.method]}; modality share {modality}; "
          f"{exp.timings_s['total_s']:.2f} s -> {out}")
    return 0


def write_explanation(out: Path, exp: "Explanation", inputs: "ModelInputs", prediction: "Prediction") -> list[str]:
    """Write overlay.png and attributions.npy (only when a scan was given), tokens.json and summary.json into
    ``out`` (created); returns the names written."""
    from medmm.explain.render import overlay_png

    out.mkdir(parents=True, exist_ok=True)
    written = []
    if exp.heatmap_scan is not None:
        title = f"{exp.finding}: p = {exp.probability:.2f}"
        (out / "overlay.png").write_bytes(overlay_png(inputs.scans[exp.view].pixels, exp.heatmap_scan, title,
                                                      caption=f"{METHOD_NAMES[exp.method]} on the calibrated logit; "
                                                              "not a diagnosis"))
        np.save(out / "attributions.npy", exp.attributions)
        written += ["overlay.png", "attributions.npy"]
    (out / "tokens.json").write_text(json.dumps(redacted_tokens(exp.tokens, inputs.notes), indent=1) + "\n")
    summary = exp.to_summary()
    summary.pop("tokens")
    summary.update(files=written + ["tokens.json", "summary.json"], warnings=list(prediction.warnings),
                   checkpoint=prediction.checkpoint)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return written + ["tokens.json", "summary.json"]


def redacted_tokens(tokens: list[tuple[str, float]], notes: str | None) -> list[dict[str, Any]]:
    """``[{word, score}]`` with the words inside identifiers of the notes (``medmm.report.deid``) and words of five
    or more digits written as [REDACTED], never as typed."""
    from medmm.report.deid import phi_words

    phi = phi_words(notes or "")
    return [{"word": "[REDACTED]" if w.lower() in phi or sum(c.isdigit() for c in w) >= 5 else w, "score": s}
            for w, s in tokens]


__all__ = ["cli_explain", "redacted_tokens", "write_explanation"]
