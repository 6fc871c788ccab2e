"""Backbone adapter: every supported family splits, taps and trains end to end (random weights, small data)."""

import json

import pytest
import torch

from medmm.models.encoders import ImageEncoder, backbone_for
from tests.helpers import require_shared

FAMILIES = {"tf_efficientnet_lite0": "efficientnet", "densenet121": "densenet", "vit_tiny_patch16_224": "vit"}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_split_and_tap_match_the_plain_forward(name):
    enc = ImageEncoder(name, None).eval()
    assert enc.backbone.family == FAMILIES[name]
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        full = enc(x)
        for tail in (0, 1, 2):
            assert torch.allclose(enc.forward_tail(enc.forward_stem(x, tail), tail), full, atol=1e-5)
        seen = {}

        class Tap(torch.nn.Module):
            def forward(self, t):
                seen["shape"] = tuple(t.shape)
                return t

        assert torch.allclose(enc.forward_with_tap(x, Tap()), full, atol=1e-5)
    assert len(seen["shape"]) == 4  # Grad-CAM always sees a [N, C, h, w] map (token grid for a ViT)
    with pytest.raises(ValueError, match="finetune-blocks"):
        enc.forward_stem(x, len(enc.stages))


def test_avgmax_pooling_is_the_mean_of_average_and_max_pooling_of_the_last_map():
    """``--image-pool avgmax``: the pooled feature is 0.5 x (mean + max) of the last map, for the whole network and
    for the cached split used in training, and a ViT refuses it."""
    enc = ImageEncoder("tf_efficientnet_lite0", None, pool="avgmax").eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        fmap = enc.model.forward_features(x)
        expected = 0.5 * (fmap.mean((2, 3)) + fmap.amax((2, 3)))
        assert torch.allclose(enc(x), expected, atol=1e-5)
        assert torch.allclose(enc.forward_tail(enc.forward_stem(x, 2), 2), expected, atol=1e-5)
    assert enc.num_features == ImageEncoder("tf_efficientnet_lite0", None).num_features
    with pytest.raises(ValueError, match="pooling"):
        ImageEncoder("vit_tiny_patch16_224", None, pool="avgmax")


def test_unsupported_backbone_is_refused_clearly():
    with pytest.raises(ValueError, match="not supported"):
        backbone_for("resnet50")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet121", "vit_tiny_patch16_224"])
def test_training_contract_other_backbones(tmp_path, name, capsys):
    require_shared("kermany224")
    require_shared("nih_adult")
    from medmm.__main__ import main as cli
    from medmm.training.train import main as train

    out = tmp_path / "run"
    assert train(["--out", str(out), "--image-encoder", name, "--no-pretrained", "--folds", "2", "--epochs", "1",
                  "--limit-per-source", "12", "--sources", "kermany,nih", "--finetune-blocks", "1",
                  "--aug-views", "1", "--no-progress"]) == 0
    meta = json.loads((out / "checkpoint" / "medmm.json").read_text())
    assert meta["model"]["image_encoder"] == name
    image = str(next((require_shared("kermany224") / "train" / "NORMAL").glob("*.jpeg")))
    capsys.readouterr()
    assert cli(["predict", "--checkpoint", str(out / "checkpoint"), image, "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert set(pred["findings"]) >= {"No Finding", "Pneumonia"}
    assert cli(["explain", "--checkpoint", str(out / "checkpoint"), image, "--method", "gradcam",
                "--out", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "overlay.png").is_file()
