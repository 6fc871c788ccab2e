"""medmm.explain (attributions, sanity checks, CLI) and medmm.explain.render (figures without pyplot).

A tiny model (fused_dim 32, random image encoder, 96 px input) keeps the whole file well under a minute on 2 cores.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medmm.models.checkpoint import CheckpointMeta
from medmm.config import ModelConfig, Preprocessing
from medmm.explain import (ExplainError, Explanation, ImageScorer, cli_explain, explain, occlusion_geometry,
                           reference_image, spearman)
from medmm.io import Scan, ScanMetadata
from medmm.labels import FINDINGS
from medmm.models.model import create_model
from medmm.pipeline import InputError, Pipeline
from medmm.explain.render import figure_to_array, figure_to_png, overlay_figure, token_highlights

ROOT = Path(__file__).resolve().parents[1]
SIZE = 96
NOTES = "Fever 39.5C, cough; crackles right base. Tachypnoea."


def _scan(h: int = 100, w: int = 160, seed: int = 0) -> Scan:
    """A non-square synthetic 'film': smooth background, two bright blobs, a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    img = 0.3 + 0.2 * yy + 0.5 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.01)
    img += 0.4 * np.exp(-((xx - 0.75) ** 2 + (yy - 0.4) ** 2) / 0.02) + 0.03 * rng.standard_normal((h, w))
    meta = ScanMetadata(source_format="png", modality=None, view=None, photometric_interpretation=None,
                        bits_stored=8, pixel_spacing_mm=None, transfer_syntax=None, rows=h, columns=w, frames=1,
                        windowing=None, inverted=False)
    return Scan(pixels=np.clip(img, 0, 1).astype(np.float32), metadata=meta)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine two OpenMP threads contend and run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    torch.manual_seed(0)
    cfg = ModelConfig(fused_dim=32)
    model = create_model(cfg, pretrained=False).eval()
    meta = CheckpointMeta(model=cfg, preprocessing=Preprocessing(input_size=SIZE), findings=FINDINGS,
                          temperatures={f: 1.5 for f in FINDINGS}, thresholds={f: 0.5 for f in FINDINGS},
                          trained=True, name="tiny-test")
    return Pipeline(model, meta, None, device="cpu")


@pytest.fixture(scope="module")
def both(pipe):
    inputs = pipe.prepare([_scan()], NOTES)
    return inputs, pipe.predict_prepared(inputs)


@pytest.fixture(scope="module")
def image_only(pipe):
    inputs = pipe.prepare([_scan()], None)
    return inputs, pipe.predict_prepared(inputs)


@pytest.fixture(scope="module")
def gradcam_sanity(pipe, both) -> Explanation:
    inputs, pred = both
    return explain(pipe, inputs, pred, method="gradcam", sanity=True, faithfulness_steps=4)


# ------------------------------------------------------------------------------------------------ explain
def test_gradcam_shapes_aspect_and_default_finding(gradcam_sanity, both):
    exp, (_, pred) = gradcam_sanity, both
    assert exp.finding == max(pred.findings, key=pred.findings.get)  # default: the most probable
    assert exp.probability == pytest.approx(pred.findings[exp.finding])
    assert exp.target == "calibrated_logit" and exp.method == "gradcam" and exp.view == 0
    assert exp.heatmap.shape == (SIZE, SIZE) and exp.attributions.shape == (SIZE, SIZE)
    assert exp.heatmap_scan.shape == (100, 160)  # the scan's own aspect ratio, not the square model grid
    for a in (exp.heatmap, exp.heatmap_scan, exp.attributions):
        assert np.isfinite(a).all()
    assert exp.heatmap.min() >= 0 and exp.heatmap.max() <= 1
    assert exp.timings_s["total_s"] > 0 and "image_s" in exp.timings_s and "sanity_s" in exp.timings_s
    json.dumps(exp.to_summary())  # JSON-ready


def test_the_film_is_encoded_once_per_request(pipe, monkeypatch):
    """Prediction, explanation and the saliency check share one encoding of the film (Pipeline.view_features)."""
    from medmm.explain.saliency_check import check_saliency

    calls = []
    real = pipe.model.encode_image_batch
    monkeypatch.setattr(pipe.model, "encode_image_batch", lambda x: calls.append(x.shape[0]) or real(x))
    inputs = pipe.prepare([_scan(), _scan(seed=1)], NOTES)
    pred = pipe.predict_prepared(inputs)
    exp = explain(pipe, inputs, pred, method="gradcam")       # Grad-CAM's own pass goes through its tap
    check = check_saliency(pipe, inputs, exp)
    assert calls[0] == 2 and check is not None
    assert sum(1 for n in calls if n == 2) == 1               # the two views were encoded together, once
    fresh = pipe.prepare([_scan(), _scan(seed=1)], NOTES)
    assert torch.equal(pipe.view_features(fresh), pipe.view_features(inputs))  # the cache holds what encoding gives


def test_scorers_reproduce_the_image_model(pipe, both):
    """The attribution forward pass computes exactly the image model's own answer (calibrated logits): what the
    notes' evidence then updates (the notes never enter the image model)."""
    inputs, pred = both
    model, temps = pipe.model, pipe.temperatures
    with torch.no_grad():
        img = model.encode_images(inputs.pixels)
        expected = model.forward_features(img, None) / temps
        by_image = ImageScorer(model, temps, 1)(inputs.pixels[:, 0], None)
    torch.testing.assert_close(by_image, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(torch.sigmoid(expected)[0].numpy(), [pred.image_findings[f] for f in FINDINGS],
                               rtol=1e-4)


def test_randomization_changes_the_map_and_faithfulness_is_reported(gradcam_sanity, both):
    stages = gradcam_sanity.sanity["randomization"]["stages"]
    assert [s["stage"] for s in stages[:3]] == ["head", "fusion+projections", "conv_head"]
    assert stages[-1]["stage"] == "stem"
    # once the whole network is re-drawn the map must be far from the original (honest bound; typically ~0)
    final = stages[-1]["spearman"]
    assert np.isfinite(final) and final < 0.9
    assert min(s["spearman"] for s in stages if np.isfinite(s["spearman"])) < 0.9
    faith = gradcam_sanity.sanity["faithfulness"]
    for key in ("deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random"):
        assert 0.0 <= faith[key] <= 1.0
    assert len(faith["deletion_curve"]) == len(faith["fraction"]) == faith["steps"] + 1
    # the map explains the image model's own answer: deletion starts from it (the notes update it afterwards)
    assert faith["deletion_curve"][0] == pytest.approx(both[1].image_findings[gradcam_sanity.finding], abs=1e-4)


def test_integrated_gradients_completeness(pipe, image_only, gradcam_sanity):
    inputs, pred = image_only
    exp = explain(pipe, inputs, pred, finding="Pneumonia", method="ig", n_steps=32)
    c = exp.sanity["ig_completeness"]
    assert c["sum_attributions"] == pytest.approx(c["f_input"] - c["f_baseline"], abs=1e-6 + abs(c["delta"]) * 1.01)
    assert c["relative_error"] < 0.1
    assert exp.attributions.sum() == pytest.approx(c["sum_attributions"], rel=1e-3, abs=1e-5)
    assert np.isfinite(exp.heatmap).all() and exp.heatmap_scan.shape == (100, 160)
    assert gradcam_sanity.sanity["notes_evidence"]["method"] == "evidence"


def test_note_words_carry_their_concepts_evidence(pipe):
    """A concept's words (and the cue that negates it) are scored by its effect on the finding's log-odds: red
    (positive) where it raises the finding shown, blue where it lowers it, for every finding; other words unscored.
    A lone concept's effect on Pneumonia is exactly the log of its likelihood ratio (Bayes on the odds)."""
    import math

    inputs = pipe.prepare([_scan()], "Denies cough. Knee pain.")
    pred = pipe.predict_prepared(inputs)
    lr = next(e.lr for e in pred.notes_evidence.used if e.finding == "Pneumonia")
    assert lr < 1                                                  # absence of cough argues against pneumonia
    for finding, sign in (("Pneumonia", -1), ("No Finding", 1)):
        exp = explain(pipe, inputs, pred, finding=finding)
        scores = dict(exp.tokens)
        assert sign * scores["Denies"] > 0 and sign * scores["cough"] > 0 and abs(scores["cough"]) == 1.0
        assert math.isnan(scores["Knee"]) and math.isnan(scores["pain"])          # no evidence: unscored
    m = explain(pipe, inputs, pred, finding="Pneumonia").modality
    assert m["finding"] == "Pneumonia" and m["notes_shift_logodds"] == pytest.approx(math.log(lr), abs=1e-6)
    with pytest.raises(ExplainError):
        explain(pipe, inputs, pred, notes_method="lime")


def test_note_words_without_evidence_leave_the_image_answer(pipe):
    inputs = pipe.prepare([_scan()], "Patient consented. Lorem ipsum.")
    pred = pipe.predict_prepared(inputs)
    assert pred.findings == pytest.approx(pred.image_findings, abs=1e-6)
    exp = explain(pipe, inputs, pred, finding="Pneumonia")
    assert all(np.isnan(s) for _, s in exp.tokens) and exp.modality["delta_notes"] == pytest.approx(0.0, abs=1e-6)


def test_occlusion_and_black_baseline(pipe, image_only):
    inputs, pred = image_only
    exp = explain(pipe, inputs, pred, finding="COVID-19", method="occlusion", baseline="black",
                  occlusion_window=32, occlusion_stride=32)  # 3 x 3 windows keep the test fast
    assert exp.finding == "COVID-19" and exp.heatmap.shape == (SIZE, SIZE)
    assert exp.sanity["occlusion"] == {"window_px": 32, "stride_px": 32}
    assert np.isfinite(exp.attributions).all() and len(np.unique(exp.attributions)) <= 9
    ref = reference_image(inputs.pixels[:, 0], "black", black=[-1.0, -1.0, -1.0])
    assert torch.all(ref == -1.0)
    assert occlusion_geometry(224) == (32, 24) and occlusion_geometry(SIZE) == (14, 10)


def test_tokens_reassemble_the_notes_words(gradcam_sanity):
    words = [w for w, _ in gradcam_sanity.tokens]
    assert "".join(words) == NOTES.replace(" ", "")  # every character is in exactly one word, original case
    assert "Tachypnoea" in words
    scores = np.array([s for _, s in gradcam_sanity.tokens])
    assert np.nanmax(np.abs(scores)) == pytest.approx(1.0) and np.isnan(scores).any()   # "right", "base": no evidence


def test_modality_contribution_both_and_single(pipe, image_only, gradcam_sanity):
    m = gradcam_sanity.modality
    assert m["present"] == ["image", "notes"]
    assert m["p_both"] == pytest.approx(gradcam_sanity.probability, abs=1e-5)
    assert m["delta_image"] == pytest.approx(m["p_both"] - m["p_notes_only"])
    assert m["share_image"] + m["share_notes"] == pytest.approx(1.0)

    e = explain(pipe, *image_only, finding="Pneumonia")
    assert e.tokens == [] and e.modality["p_both"] is None and e.modality["p_notes_only"] is None
    assert e.modality["share_image"] == 1.0 and e.modality["share_notes"] == 0.0
    assert e.modality["p_image_only"] == pytest.approx(e.probability, abs=1e-5)

    notes_only = pipe.prepare([], NOTES)
    e = explain(pipe, notes_only, None, finding="Pneumonia", method="ig")  # prediction computed when None
    assert e.heatmap is None and e.heatmap_scan is None and e.view is None and e.tokens
    assert e.modality["share_notes"] == 1.0 and e.modality["p_notes_only"] == pytest.approx(e.probability, abs=1e-9)


def test_several_views_explain_the_chosen_one(pipe):
    inputs = pipe.prepare([_scan(), _scan(80, 60, seed=1)], None)
    e = explain(pipe, inputs, pipe.predict_prepared(inputs), view=1)
    assert e.view == 1 and e.heatmap_scan.shape == (80, 60) and "scan 2 of 2" in e.notes[0]
    with pytest.raises(ExplainError, match="View 5"):
        explain(pipe, inputs, pipe.predict_prepared(inputs), view=5)


def test_unknown_finding_or_method_is_a_clear_error(pipe, image_only):
    inputs, pred = image_only
    with pytest.raises(ExplainError, match="Unknown finding 'Cardiomegaly'.*Pneumonia"):
        explain(pipe, inputs, pred, finding="Cardiomegaly")
    with pytest.raises(ValueError, match="gradcam, ig, occlusion"):
        explain(pipe, inputs, pred, method="lime")
    assert issubclass(ExplainError, InputError) and issubclass(ExplainError, ValueError)
    assert explain(pipe, inputs, pred, finding="pneumonia").finding == "Pneumonia"  # case-insensitive


def test_spearman_helper():
    a = np.arange(20.0)
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.zeros(20)))


def test_cli_writes_all_outputs(pipe, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "film.png"
    Image.fromarray((_scan().pixels * 255).astype(np.uint8)).save(png)
    out = tmp_path / "out"
    quick = tmp_path / "quick"
    assert cli_explain(pipe, [str(png)], "cough and fever", finding="Pneumonia", method="gradcam", out_dir=quick) == 0
    assert not {"randomization", "faithfulness"} & set(json.loads((quick / "summary.json").read_text())["sanity"])
    assert cli_explain(pipe, [str(png)], "cough and fever", finding="Pneumonia", method="gradcam", out_dir=out,
                       sanity=True, randomize_stages=2, faithfulness_steps=2) == 0
    assert {p.name for p in out.iterdir()} == {"overlay.png", "attributions.npy", "tokens.json", "summary.json"}
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.load(out / "attributions.npy").shape == (SIZE, SIZE)
    assert [t["word"] for t in json.loads((out / "tokens.json").read_text())] == ["cough", "and", "fever"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finding"] == "Pneumonia" and summary["method"] == "gradcam"
    assert {"randomization", "faithfulness"} <= set(summary["sanity"]) and "share_image" in summary["modality"]
    assert [s["stage"] for s in summary["sanity"]["randomization"]["stages"]] == ["head", "fusion+projections"]
    assert "Pneumonia" in capsys.readouterr().out
    with pytest.raises(ExplainError):
        cli_explain(pipe, [str(png)], None, finding="nope", method="gradcam", out_dir=out)


# ------------------------------------------------------------------------------------------------ render
def test_overlay_figure_png_and_array():
    scan = _scan(100, 160).pixels
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[30:60, 20:50] = 1.0
    fig = overlay_figure(scan, heat, "Pneumonia: p = 0.83", caption="Grad-CAM; not a diagnosis")
    (ax,) = fig.axes
    assert len(ax.child_axes) == 1  # image + colour bar (an inset so it matches the image's height)
    assert ax.child_axes[0].get_ylabel().startswith("relative attribution")
    assert ax.get_title() == "Pneumonia: p = 0.83"
    png = figure_to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    arr = figure_to_array(fig)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert arr.shape[1] > arr.shape[0]  # a wide scan gives a wide figure
    with pytest.raises(ValueError):
        overlay_figure(scan[None], heat, "x")


def test_blend_overlay_shows_the_film_where_there_is_no_evidence():
    from medmm.explain.render import blend_overlay

    scan = _scan(100, 160).pixels
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[:, SIZE // 2:] = 1.0                              # evidence on the right half only
    out = blend_overlay(scan, heat)
    assert out.shape == (100, 160, 3) and out.dtype == np.uint8
    grey = np.round(np.clip(scan, 0, 1) * 255)
    left = out[:, :70].astype(int)
    assert np.abs(left - grey[:, :70, None]).max() <= 1     # no evidence: the film itself, in grey
    right = out[:, 90:].astype(float)
    assert (np.abs(right[..., 0] - right[..., 2]) > 20).mean() > 0.9   # evidence: coloured (inferno is not grey)
    assert blend_overlay(scan, heat, (80, 50)).shape == (50, 80, 3)


def test_overlay_array_draws_title_bar_and_caption_at_the_film_aspect():
    from medmm.explain.render import overlay_array, overlay_png

    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[30:60, 20:50] = 1.0
    wide = overlay_array(_scan(100, 160).pixels, heat, "Pneumonia (p = 0.83)", caption="Grad-CAM\nnot a diagnosis")
    assert wide.dtype == np.uint8 and wide.ndim == 3 and wide.shape[2] == 3 and wide.shape[1] == 600
    assert wide.shape[1] > wide.shape[0]                   # a wide film gives a wide picture
    assert (wide[:30].min(axis=2) < 100).any()            # the title is drawn (dark text on white)
    assert (wide[-30:].min(axis=2) < 100).any()           # so is the caption
    tall = overlay_array(_scan(400, 120).pixels, heat, "x", max_height_px=800)
    assert tall.shape[0] <= 800 and tall.shape[1] < 600     # a portrait film: narrower, not taller
    assert overlay_png(_scan().pixels, heat, "x")[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        overlay_array(_scan().pixels[None], heat, "x")


def test_token_highlights_keep_the_text_gaps():
    tokens = [("Fever", 0.5), ("39.5C", -0.2), (",", 0.0), ("cough", 1.0)]
    hl = token_highlights(tokens, "Fever 39.5C, cough")
    assert "".join(t for t, _ in hl) == "Fever 39.5C, cough"
    assert hl[0] == ("Fever", 0.5) and (" ", None) in hl
    assert token_highlights([("a", 2.0), ("b", -0.5)]) == [("a", 1.0), (" ", None), ("b", -0.5)]


def test_render_never_imports_pyplot():
    source = (ROOT / "medmm" / "explain" / "render.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            assert not any("pyplot" in a.name for a in node.names)
        if isinstance(node, ast.ImportFrom):
            assert "pyplot" not in (node.module or "") and not any(a.name == "pyplot" for a in node.names)
    code = ("import sys, numpy as np\n"
            "from medmm.explain.render import overlay_figure, figure_to_png, overlay_png\n"
            "figure_to_png(overlay_figure(np.zeros((20, 30)), np.ones((8, 8)), 't'))\n"
            "overlay_png(np.zeros((20, 30)), np.ones((8, 8)), 't', caption='c')\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_token_highlights_leave_punctuation_unscored():
    from medmm.explain.render import token_highlights

    out = token_highlights([("fever", 0.8), (",", 0.5), ("cough", -0.2), (".", 0.1)], "fever, cough.")
    assert "".join(t for t, _ in out) == "fever, cough."
    scores = dict(out)
    assert scores["fever"] == 0.8 and scores["cough"] == -0.2
    assert scores[","] is None and scores["."] is None


# ------------------------------------------------------------------------------------------------ lung fields + wording
def _blob(cx: float, cy: float, size: int = 224, sigma: float = 0.03) -> np.ndarray:
    """A map whose positive evidence sits around (cx, cy), in the film's normalised coordinates."""
    c = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)) - 0.05   # a little negative evidence too


@pytest.mark.parametrize("size", [96, 224])
def test_lung_share_finds_where_the_evidence_lies(size):
    from medmm.explain.saliency_check import LUNG_FIELDS, REGIONS, region_map, region_shares

    right, left = ((cx, cy) for cx, cy, _, _ in LUNG_FIELDS)
    for where, (cx, cy) in {"lung fields": right, "mediastinum/heart": (0.5, 0.55), "neck/shoulders": (0.5, 0.05),
                            "below the lungs": (0.5, 0.92), "outside the lung area": (0.04, 0.5)}.items():
        shares = region_shares(_blob(cx, cy, size))
        assert set(shares) == set(REGIONS) and sum(shares.values()) == pytest.approx(1.0)
        assert max(shares, key=shares.get) == where and shares[where] > 0.8, (where, shares)
    assert region_shares(_blob(*left, size))["lung fields"] > 0.8
    # a uniform map puts the prior's area share in the lung fields (about a third of the film); no evidence: None
    uniform = region_shares(np.ones((size, size)))["lung fields"]
    assert uniform == pytest.approx((region_map(size) == 0).mean()) and 0.25 < uniform < 0.4
    assert region_shares(-np.ones((size, size))) is None
    with pytest.raises(ValueError):
        region_shares(np.ones((size, size + 1)))
    m = region_map(size)
    assert m[size // 2, size // 2] == REGIONS.index("mediastinum/heart")     # the middle of the film is not lung
    assert (m[:, : size // 2] == 0).sum() == (m[:, size - size // 2:] == 0).sum()   # the two fields mirror


def test_check_saliency_computes_insertion_only_when_deletion_does_not_decide(pipe, image_only, monkeypatch):
    """The per-request check skips the insertion curve when deletion alone makes the map faithful, with the verdict
    and words of the complete check; when deletion does not decide (here: a margin no gain reaches), it computes
    insertion and gives the complete check's numbers."""
    from medmm.explain import saliency_check as sc

    inputs, pred = image_only
    exp = explain(pipe, inputs, pred, method="gradcam")
    for margin in (-1.0, 10.0):                      # deletion decides / never decides
        monkeypatch.setattr(sc, "MARGIN", margin)
        lazy, full = sc.check_saliency(pipe, inputs, exp), sc.check_saliency(pipe, inputs, exp, complete=True)
        assert sc.verdict(lazy) == sc.verdict(full) and sc.summarise(lazy) == sc.summarise(full)
        assert lazy["deletion_gain"] == pytest.approx(full["deletion_gain"], abs=1e-6)
        if margin < 0:
            assert lazy["insertion_gain"] is None and full["insertion_gain"] is not None
        else:
            assert lazy["insertion_gain"] == pytest.approx(full["insertion_gain"], abs=1e-6)
            assert lazy["insertion_auc_random"] == pytest.approx(full["insertion_auc_random"], abs=1e-6)


def test_check_saliency_reports_the_lung_share_of_its_own_map(pipe, image_only):
    from medmm.explain.saliency_check import check_saliency, region_shares

    inputs, pred = image_only
    exp = explain(pipe, inputs, pred, method="gradcam")
    check = check_saliency(pipe, inputs, exp)
    shares = region_shares(exp.attributions)
    assert check["region_shares"] == shares and check["lung_share"] == shares["lung fields"]
    assert 0.0 <= check["lung_share"] <= 1.0
    json.dumps(check)


def _check(**over):
    good = {"method": "gradcam", "compared_with": "ig", "deletion_gain": 0.2, "insertion_gain": 0.05,
            "agreement_spearman": 0.6, "deletion_auc": 0.4, "deletion_auc_random": 0.6, "lung_share": 0.7,
            "region_shares": {"lung fields": 0.7, "mediastinum/heart": 0.2, "neck/shoulders": 0.05,
                              "below the lungs": 0.05, "outside the lung area": 0.0}}
    return {**good, **over}


def test_details_cite_the_curve_that_made_the_map_faithful():
    """Faithful by insertion alone (deletion no better than random): the sentence cites insertion and does not claim
    that deleting the areas lowered the probability faster than random."""
    from medmm.explain.saliency_check import details, verdict

    by_insertion = _check(deletion_gain=-0.01, deletion_auc=0.62, deletion_auc_random=0.61, insertion_gain=0.05,
                          insertion_auc=0.75, insertion_auc_random=0.70)
    assert verdict(by_insertion)["faithful"] is True
    text = details(by_insertion)
    assert "insertion AUC 0.750 vs 0.700 random" in text and "lowers the probability faster" not in text
    assert "deletion AUC 0.620 vs 0.610" in text
    text = details(_check())                                   # faithful by deletion: the deletion sentence
    assert "lowers the probability faster than random areas (deletion AUC 0.400 vs 0.600 random)" in text


OUTSIDE = {"mediastinum/heart": ("mediastinum and heart", "on heart/mediastinum"),
           "neck/shoulders": ("neck and shoulders", "on neck/shoulders"),
           "outside the lung area": ("outside the lung area", "outside the lungs")}


def _caption_lines_fit(caption: str) -> None:
    """Two lines that fit the overlay (600 px wide, 12 px margins, 17 px DejaVu Sans; medmm.explain.render)."""
    from PIL import Image, ImageDraw

    from medmm.explain.render import _font

    lines = caption.split("\n")
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    assert len(lines) == 2 and all(line.strip() for line in lines), caption
    assert max(draw.textlength(line, font=_font(17)) for line in lines) <= 576, caption


def test_each_failing_check_says_do_not_use_the_map_to_locate():
    from types import SimpleNamespace

    from medmm.explain.methods import METHOD_NAMES, REGISTRY
    from medmm.explain.saliency_check import DO_NOT_LOCATE, summarise, verdict
    from medmm.serve.presenters import overlay_caption

    assert verdict(_check()) == {"faithful": True, "agree": True, "in_lungs": True, "located": True, "in_scope": None}
    out_of_scope = verdict(_check(finding_in_scope=False))     # e.g. any finding on an adult film
    assert out_of_scope["located"] is False and "does not assess this finding" in summarise(_check(finding_in_scope=False))
    failing = {"faithful": _check(deletion_gain=-0.02, insertion_gain=0.0),
               "agree": _check(agreement_spearman=0.05),
               "in_lungs": _check(lung_share=0.2, region_shares={"lung fields": 0.2, "mediastinum/heart": 0.6,
                                                                  "neck/shoulders": 0.2})}
    words = {"faithful": ("no more to the result than random", "NO BETTER THAN RANDOM"),
             "agree": ("highlights different areas", "METHODS DISAGREE"),
             "in_lungs": ("not in the lung fields", "on heart/mediastinum")}
    for m in REGISTRY:
        exp = SimpleNamespace(method=m.key)
        good = _check(method=m.key, compared_with=m.compare_with)
        text, caption = summarise(good, METHOD_NAMES), overlay_caption(exp, good)
        assert DO_NOT_LOCATE.lower() not in (text + caption).lower()
        assert "may help you" in text and "not proof" in text and "not proof" in caption.split("\n")[1]
        _caption_lines_fit(caption)
        for name, bad in failing.items():
            bad = {**bad, "method": m.key, "compared_with": m.compare_with}
            v = verdict(bad)
            assert v[name] is False and v["located"] is False
            text, caption = summarise(bad, METHOD_NAMES), overlay_caption(exp, bad)
            assert text.startswith(DO_NOT_LOCATE + ":") and words[name][0] in text, text
            assert caption.split("\n")[1].startswith(DO_NOT_LOCATE) and words[name][1] in caption, caption
            _caption_lines_fit(caption)
        every = {**failing["faithful"], **failing["in_lungs"], "agreement_spearman": 0.0, "compared_with": m.compare_with}
        caption = overlay_caption(exp, every)
        assert "on heart/mediastinum" in caption and DO_NOT_LOCATE in caption
        _caption_lines_fit(caption)
    # a check that could not run, or no check at all: never "usable"
    for unmeasured in (_check(lung_share=None, region_shares=None), _check(agreement_spearman=float("nan"))):
        assert verdict(unmeasured)["located"] is None
        assert DO_NOT_LOCATE in summarise(unmeasured) and DO_NOT_LOCATE in overlay_caption(SimpleNamespace(method="gradcam"), unmeasured)
    assert DO_NOT_LOCATE.lower() in summarise(None).lower()
    caption = overlay_caption(SimpleNamespace(method="ig"), None)
    assert "not checked" in caption and DO_NOT_LOCATE in caption
    _caption_lines_fit(caption)


@pytest.mark.parametrize("region", list(OUTSIDE))
def test_the_wording_names_where_the_evidence_lies(region):
    from types import SimpleNamespace

    from medmm.explain.saliency_check import DO_NOT_LOCATE, outside_region, summarise
    from medmm.serve.presenters import overlay_caption

    check = _check(lung_share=0.3, region_shares={"lung fields": 0.3, region: 0.5, "below the lungs": 0.2})
    assert outside_region(check) == (region, 0.5)
    text, caption = summarise(check), overlay_caption(SimpleNamespace(method="gradcam"), check)
    assert text.startswith(DO_NOT_LOCATE) and OUTSIDE[region][0] in text and "30 %" in text
    assert OUTSIDE[region][1] in caption.split("\n")[0] and caption.split("\n")[1].startswith(DO_NOT_LOCATE)
    assert "OUTSIDE THE LUNG FIELDS" in text and "not a segmentation" in text


def test_explanation_panel_leads_with_what_to_do():
    from types import SimpleNamespace

    from medmm.explain.saliency_check import DO_NOT_LOCATE
    from medmm.serve.presenters import explanation_markdown

    exp = SimpleNamespace(method="gradcam", finding="Pneumonia", probability=0.8, heatmap_scan=np.zeros((4, 4)),
                          modality={}, notes=[])
    bad = explanation_markdown(exp, _check(agreement_spearman=0.1)).split("\n\n")
    assert bad[1].startswith(f"**{DO_NOT_LOCATE}:") and "METHODS DISAGREE" in bad[2]
    good = explanation_markdown(exp, _check()).split("\n\n")
    assert "may help you decide where to look" in good[1] and "not proof" in good[1]
    assert "better than random" in good[2] and "Lung fields: 70 %" in good[2]
