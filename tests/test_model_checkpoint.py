import json

import numpy as np
import pytest
import torch

from medmm.models.checkpoint import CheckpointError, CheckpointMeta, OODReference, load_checkpoint, save_checkpoint
from medmm.config import ModelConfig, Preprocessing
from medmm.labels import FINDINGS
from medmm.models.model import create_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model(ModelConfig(fused_dim=32), pretrained=False).eval()


def _meta(trained=True):
    return CheckpointMeta(model=ModelConfig(fused_dim=32), preprocessing=Preprocessing(), findings=FINDINGS,
                          temperatures={f: 1.5 for f in FINDINGS}, thresholds={f: 0.4 for f in FINDINGS},
                          trained=trained, name="test")


def test_either_modality_may_be_missing_and_views_combine(model):
    pixels = torch.randn(2, 3, 3, 64, 64)  # [B, V, C, H, W]
    tok = model.text_encoder.tokenize(["fever and cough", "no complaints"])
    with torch.inference_mode():
        both = model(pixels, None, tok["input_ids"], tok["attention_mask"])
        img_only = model(pixels)
        txt_only = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        # a view masked out must not change the result: same as passing only the other views
        mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
        masked = model.forward_features(model.encode_images(pixels, mask), None)
        two = model.forward_features(model.encode_images(pixels[:, :2]), None)
    assert both.shape == img_only.shape == txt_only.shape == (2, len(FINDINGS))
    assert not torch.allclose(both, img_only) and not torch.allclose(both, txt_only)
    torch.testing.assert_close(masked, two)
    with pytest.raises(ValueError):
        model.forward_features(None, None)


def test_checkpoint_roundtrip_is_exact(model, tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, model.image_encoder.num_features)).astype(np.float32)
    ood = OODReference.fit(emb, k=8)
    save_checkpoint(tmp_path, model, _meta(), ood)
    loaded, meta, ood2 = load_checkpoint(tmp_path)
    x = torch.randn(1, 1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))
    assert meta.findings == FINDINGS and meta.thresholds["Pneumonia"] == 0.4
    np.testing.assert_allclose(ood2.score(emb[:5]), ood.score(emb[:5]), rtol=1e-5)
    # in-distribution scores sit mostly under the threshold; a far-away embedding above it
    assert (ood.score(emb) <= ood.threshold).mean() >= 0.99
    assert ood.score(emb[0] + 50)[0] > ood.threshold
    stored = json.loads((tmp_path / "medmm.json").read_text())
    assert stored["findings"] == list(FINDINGS) and len(stored["weights_sha256"]) == 64
    assert not any(p.suffix in {".pt", ".pth", ".pkl", ".bin"} for p in tmp_path.iterdir())  # no pickles


def test_tampered_weights_and_wrong_findings_are_refused(model, tmp_path):
    save_checkpoint(tmp_path, model, _meta())
    with pytest.raises(CheckpointError, match="findings"):
        load_checkpoint(tmp_path, expected_findings=tuple(reversed(FINDINGS)))
    meta = json.loads((tmp_path / "medmm.json").read_text())
    meta["findings"] = list(reversed(FINDINGS))  # JSON edited to another order -> weights metadata disagrees
    (tmp_path / "medmm.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path, expected_findings=None)
    save_checkpoint(tmp_path, model, _meta())
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path)


def test_batchnorm_folding_keeps_outputs(model):
    import copy

    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    for m in reference.image_encoder.modules():  # non-trivial statistics, so folding has something to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    folded = copy.deepcopy(reference)
    folded.image_encoder.fold_batchnorm_()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.image_encoder.modules())
    x = torch.randn(2, 1, 3, 64, 64)
    with torch.inference_mode():
        ref, out = reference(x), folded(x)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(ref, model(x), atol=1e-3)  # the statistics really mattered


def test_a_model_without_the_sentence_embedding_ignores_it():
    """``sentence_embedding=False`` (the default recipe): the fusion reads the bag of words and the notes expert's
    column only, while the notes features keep their layout (the sentence embedding first, for the report bank)."""
    torch.manual_seed(0)
    cfg = ModelConfig(fused_dim=32, output="states", bag_of_words_dim=16, sentence_embedding=False,
                      notes_expert="COVID-19")
    m = create_model(cfg, pretrained=False).eval()
    dim = m.text_encoder.dim
    assert m.text_proj[1].in_features == 16 + 1
    tok = m.text_encoder.tokenize(["fever and cough, rule out pneumonia", "preoperative chest film"])
    with torch.no_grad():
        txt = m.encode_text(tok["input_ids"], tok["attention_mask"], torch.tensor([1.5, -0.5]))
        assert txt.shape == (2, dim + 16 + 1)
        other = txt.clone()
        other[:, :dim] = torch.randn(2, dim)            # a different sentence embedding ...
        a, b = m.forward_features(None, txt), m.forward_features(None, other)
        assert torch.equal(a, b)                          # ... changes nothing
        changed = txt.clone()
        changed[:, dim:dim + 16] += 1.0                   # the bag of words does
        assert not torch.allclose(a, m.forward_features(None, changed))
    with_sentence = create_model(ModelConfig(fused_dim=32, output="states", bag_of_words_dim=16,
                                             notes_expert="COVID-19"), pretrained=False)
    assert with_sentence.text_proj[1].in_features == dim + 16 + 1  # older checkpoints: unchanged
