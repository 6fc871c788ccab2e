"""``python -m medmm explain --out DIR``: tokens.json carries no identifier of the notes (tiny model of test_explain)."""

from __future__ import annotations

import json

import numpy as np

from medmm.explain import cli_explain
from tests.test_explain import _one_thread, _scan, pipe  # noqa: F401  (fixtures)

NOTES = ("Fever and cough, crackles right base. Patient John Doe, MRN 4471923, seen 01/05 by Dr. Gregory House; "
         "tel +44 20 7946 0958. Acc# RAD-2020-11873.")


def test_tokens_json_without_identifiers(pipe, tmp_path) -> None:  # noqa: F811
    from PIL import Image

    png = tmp_path / "film.png"
    Image.fromarray((_scan().pixels * 255).astype(np.uint8)).save(png)
    out = tmp_path / "out"
    assert cli_explain(pipe, [str(png)], NOTES, finding="Pneumonia", method="gradcam", out_dir=out) == 0
    raw = (out / "tokens.json").read_text()
    words = [t["word"] for t in json.loads(raw)]
    for identifier in ("john", "doe", "4471923", "gregory", "house", "7946", "0958", "11873", "01", "05"):
        assert identifier not in {w.lower() for w in words}, identifier
    assert "4471923" not in raw and "doe" not in raw.lower()
    assert {"fever", "cough", "crackles"} <= {w.lower() for w in words}   # clinical words kept, with scores
    assert "[REDACTED]" in words
