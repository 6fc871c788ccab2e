"""Every option of ``python -m medmm.train`` is documented and reaches the run's frozen config: nothing accepted and
ignored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medmm.training.train import parse_args

# option -> (the values given, a check on (RunConfig, its TrainConfig)); a new option without a row here fails the
# first test
CASES = {
    "--recipe": (["default"], lambda a, c: a.recipe == "default" and c.folds == 3),
    "--out": (["runs/x"], lambda a, c: a.out == Path("runs/x")),
    "--sources": (["kermany,nih"], lambda a, c: c.sources == ("kermany", "nih")),
    "--manifest": (["m.csv"], lambda a, c: c.manifest == "m.csv"),
    "--folds": (["7"], lambda a, c: c.folds == 7),
    "--loso": (["2"], lambda a, c: a.loso is True and a.loso_epochs == 2),
    "--epochs": (["9"], lambda a, c: c.epochs == 9),
    "--batch-size": (["8"], lambda a, c: c.batch_size == 8),
    "--lr": (["0.5"], lambda a, c: c.lr == 0.5),
    "--encoder-lr": (["0.25"], lambda a, c: c.encoder_lr == 0.25),
    "--finetune-blocks": (["2"], lambda a, c: c.finetune_blocks == 2),
    "--image-encoder": (["densenet121"], lambda a, c: a.image_encoder == "densenet121"),
    "--no-pretrained": ([], lambda a, c: a.pretrained is False),
    "--bag-of-words-dim": (["64"], lambda a, c: c.bag_of_words_dim == 64),
    "--sentence-embedding": ([], lambda a, c: c.sentence_embedding is True),
    "--notes-expert": ([""], lambda a, c: c.notes_expert is None),
    "--source-weights": (["nih=3,covid=0.5"], lambda a, c: c.source_weights == {"nih": 3.0, "covid": 0.5}),
    "--aug-views": (["5"], lambda a, c: a.aug_views == 5),
    "--modality-dropout": (["0.1"], lambda a, c: c.modality_dropout == 0.1),
    "--target-sensitivity": (["0.8"], lambda a, c: c.target_sensitivity == 0.8),
    "--adult-specificity": (["0.9"], lambda a, c: c.adult_specificity == 0.9),
    "--limit-per-source": (["10"], lambda a, c: c.limit_per_source == 10),
    "--seed": (["4"], lambda a, c: c.seed == 4),
    "--device": (["cpu"], lambda a, c: a.device == "cpu"),
    "--no-progress": ([], lambda a, c: a.progress is False),
}


def test_every_option_is_documented_and_has_a_case(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    shown = capsys.readouterr().out
    options = re.findall(r"^  (--[a-z-]+)", shown, re.M)
    assert set(options) - {"--help"} == set(CASES)
    blocks = re.split(r"\n  (?=--)", shown.split("options:")[1])
    for block in blocks[1:]:
        name = block.split()[0]
        assert len(block.split()) > 2 or "{" in block, f"{name} has no help text"


@pytest.mark.parametrize("option", sorted(CASES))
def test_each_option_reaches_the_run(option):
    values, check = CASES[option]
    config = parse_args([option, *values])
    assert check(config, config.train), option


def test_loso_without_epochs_trains_as_long_as_the_other_fits():
    assert parse_args([]).loso is False
    plain = parse_args(["--loso"])
    assert plain.loso is True and plain.loso_epochs is None
    assert parse_args(["--loso", "0"]).loso_epochs is None
    assert parse_args(["--loso", "--epochs", "3"]).train.epochs == 3          # a bare --loso takes no value


@pytest.mark.parametrize("folded", [["--loso-epochs", "2"], ["--checkpoint-out", "ck"]])
def test_folded_options_are_refused_not_ignored(folded):
    with pytest.raises(SystemExit):
        parse_args(folded)
