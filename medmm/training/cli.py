"""The options of ``python -m medmm.train``, read into frozen configs: ``TrainConfig`` (the recipe: data, folds,
optimiser, notes pathway, operating points) and ``RunConfig`` (where the run writes, on what, and the extras around
the recipe). Named recipes (``medmm.config.RECIPES``) set the defaults; options given on the command line override.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medmm.config import RECIPES, ModelConfig, TrainConfig

DESCRIPTION = "Side training script: ``python -m medmm.train [--out DIR] [--folds 5] ...``."


@dataclass(frozen=True)
class RunConfig:
    """One run's settings: the training recipe (``train``) and what the script does around it."""

    train: TrainConfig
    out: Path                          # the checkpoint (OUT/checkpoint), metrics, caches, finished folds
    image_encoder: str                 # timm name
    pretrained: bool = True            # False: random image-encoder weights (tests, smoke runs)
    aug_views: int = 2                 # augmented cached views per image (plus one clean)
    loso: bool = False                 # also run leave-one-source-out
    loso_epochs: int | None = None     # epochs of the leave-one-source-out fits (None: the recipe's)
    device: str | None = None          # None: cuda when available, else cpu
    progress: bool = True              # progress bars (rank 0 only)
    recipe: str | None = None          # the named recipe the run started from


def parse_args(argv: list[str] | None) -> RunConfig:
    ap = argparse.ArgumentParser(prog="python -m medmm.train", description=DESCRIPTION)
    d = TrainConfig()
    recipes = "; ".join(f"{name}: {recipe_options(name)}" for name in RECIPES)
    ap.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                    help=f"start from a named recipe (options given here override it). {recipes}")
    ap.add_argument("--out", default="runs/default",
                    help="output folder: the checkpoint (OUT/checkpoint), metrics.json, oof.npz, caches, finished folds")
    ap.add_argument("--sources", default=",".join(d.sources),
                    help="comma list of kermany,covid,iu,nih,nih_sample ('' for none)")
    ap.add_argument("--manifest", default=None, help="CSV with image,notes,patient_id and one column per finding")
    ap.add_argument("--folds", type=int, default=d.folds, help="k for patient-grouped CV (0: no CV, final fit only)")
    ap.add_argument("--loso", nargs="?", type=int, const=True, default=None, metavar="EPOCHS",
                    help="also run leave-one-source-out (train without each image source, test on it), EPOCHS epochs a "
                         "fit (default --epochs)")
    ap.add_argument("--epochs", type=int, default=d.epochs, help="training epochs per fit")
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="rows per training step")
    ap.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate of the fusion and heads")
    ap.add_argument("--encoder-lr", type=float, default=d.encoder_lr,
                    help="AdamW learning rate of the image encoder's trained tail")
    ap.add_argument("--finetune-blocks", type=int, default=d.finetune_blocks,
                    help="last N backbone stages trained (+ the head conv); earlier ones frozen and cached")
    ap.add_argument("--image-encoder", default=ModelConfig.image_encoder, help="timm name (efficientnet, densenet, vit)")
    ap.add_argument("--no-pretrained", action="store_true", help="random image-encoder weights (tests, smoke runs)")
    ap.add_argument("--bag-of-words-dim", type=int, default=d.bag_of_words_dim,
                    help="size of a trained bag of words over the notes' tokens fed to the fusion (0: none)")
    ap.add_argument("--sentence-embedding", action=argparse.BooleanOptionalAction, default=d.sentence_embedding,
                    help="feed the frozen sentence embedding of the notes to the fusion (--no-sentence-embedding: bag "
                         "of words and notes expert only)")
    ap.add_argument("--notes-expert", default=d.notes_expert,
                    help="finding of the TF-IDF + logistic-regression notes expert fed to the fusion ('' for none)")
    ap.add_argument("--source-weights", type=_source_weights,
                    default=",".join(f"{k}={v:g}" for k, v in d.source_weights.items()),
                    help="loss weight per source, e.g. nih=2,nih_sample=4,covid=1.5 (unnamed sources: 1)")
    ap.add_argument("--aug-views", type=int, default=2, help="augmented cached views per image (plus one clean)")
    ap.add_argument("--modality-dropout", type=float, default=d.modality_dropout,
                    help="probability that a row with image and notes hides one of them during training")
    ap.add_argument("--target-sensitivity", type=float, default=d.target_sensitivity,
                    help="operating point per finding: highest threshold reaching this out-of-fold sensitivity")
    ap.add_argument("--adult-specificity", type=float, default=d.adult_specificity,
                    help="COVID-19 threshold also keeps this specificity among adult non-COVID (NIH) films")
    ap.add_argument("--limit-per-source", type=int, default=None, help="subsample each source (smoke runs)")
    ap.add_argument("--seed", type=int, default=d.seed, help="folds, data order, augmentation and initial weights")
    ap.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    recipe = ap.parse_known_args(argv)[0].recipe
    if recipe:
        ap.set_defaults(**_recipe_defaults(recipe))
    return _run_config(ap.parse_args(argv), d)


def _run_config(args: argparse.Namespace, d: TrainConfig) -> RunConfig:
    """The parsed options as frozen configs (the Namespace goes no further than this)."""
    cfg = replace(d, sources=tuple(s for s in args.sources.split(",") if s), manifest=args.manifest,
                  folds=args.folds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  encoder_lr=args.encoder_lr, finetune_blocks=args.finetune_blocks,
                  modality_dropout=args.modality_dropout,
                  target_sensitivity=args.target_sensitivity, adult_specificity=args.adult_specificity,
                  seed=args.seed, limit_per_source=args.limit_per_source, bag_of_words_dim=args.bag_of_words_dim,
                  sentence_embedding=args.sentence_embedding, notes_expert=args.notes_expert or None,
                  source_weights=args.source_weights if isinstance(args.source_weights, dict)
                  else _source_weights(args.source_weights))
    loso_epochs = None if args.loso is True else args.loso or None  # --loso / --loso 0: the recipe's epochs
    return RunConfig(train=cfg, out=Path(args.out), image_encoder=args.image_encoder, pretrained=not args.no_pretrained,
                     aug_views=args.aug_views, loso=args.loso is not None, loso_epochs=loso_epochs,
                     device=args.device, progress=not args.no_progress, recipe=args.recipe)


def _recipe_defaults(name: str) -> dict[str, Any]:
    """A named recipe as option defaults. ``RECIPES`` keeps leave-one-source-out as the two settings a checkpoint
    stores (``loso``, ``loso_epochs``); on the command line they are the one option ``--loso [EPOCHS]``."""
    recipe, out = RECIPES[name], {}
    for key, value in recipe.items():
        if key == "loso":
            out[key] = (recipe.get("loso_epochs") or True) if value else None
        elif key != "loso_epochs":
            out[key] = value
    return out


def recipe_options(name: str) -> str:
    """The options a named recipe stands for, as they would be typed (``--help`` shows them)."""
    words = []
    for key, value in _recipe_defaults(name).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is not None:
            words.append(f"{flag} {value}")
    return " ".join(words)


def recipe_config(config: RunConfig) -> dict:
    """What a checkpoint stores of the settings that trained it (``training.config``), with the recipe's name."""
    return config.train.to_dict() | {"aug_views": config.aug_views, "image_encoder": config.image_encoder,
                                     "loso": config.loso, "loso_epochs": config.loso_epochs, "recipe": config.recipe}


def _source_weights(text: str) -> dict[str, float]:
    """``"nih=2,covid=1.5"`` -> ``{"nih": 2.0, "covid": 1.5}`` (argparse type; a clear error on a bad pair)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"source weight {part!r} is not NAME=NUMBER") from None
        if not sep or not name.strip() or out[name.strip()] < 0:
            raise argparse.ArgumentTypeError(f"source weight {part!r} is not NAME=NUMBER (number >= 0)")
    return out
