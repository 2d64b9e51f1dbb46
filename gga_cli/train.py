"""``gga train RECIPE``: train a model from a recipe and write its folder.

Every epoch ends with a checkpoint beside the model folder (``<out>.checkpoint.pt``, or
``--checkpoint FILE``); ``--resume`` continues an interrupted run from it.
"""

import argparse
import sys
from pathlib import Path

from gga_training.recipe import load_recipe
from models.errors import CheckpointError
from models.repository import ModelRepository


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model from a TOML recipe")
    p.add_argument("recipe", type=Path, help="recipe file, e.g. recipes/fashion-mnist-cnn.toml")
    p.add_argument("--out", type=Path, help="model folder to write (default: REPO/<name>)")
    p.add_argument("--repo", help="repository for --out's default and distillation teachers")
    p.add_argument("--data-dir", help="data sets folder (default: $GGA_DATA_DIR)")
    p.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint file written after every epoch (default: <out>.checkpoint.pt)",
    )
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume", action="store_true", help="continue the run saved in the checkpoint"
    )
    resume.add_argument(
        "--restart",
        action="store_true",
        help="start afresh even though a checkpoint exists (it is overwritten after epoch 1)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gga_training.train import train  # torch-heavy; imported only when training

    recipe = load_recipe(args.recipe)
    repo = ModelRepository(args.repo)
    out = args.out or repo.root / recipe.name
    checkpoint = args.checkpoint or out.with_name(out.name + ".checkpoint.pt")
    if checkpoint.exists() and not (args.resume or args.restart):
        raise CheckpointError(
            f"{checkpoint} holds an earlier run of this model: pass --resume to continue it, "
            "or --restart to train from scratch"
        )
    result = train(
        recipe,
        out,
        data_dir=args.data_dir,
        repo=repo,
        epochs=args.epochs,
        progress=not args.no_progress,
        checkpoint=checkpoint,
        resume=args.resume,
    )
    m = result.card.metrics
    sys.stdout.write(
        f"{recipe.name}: test accuracy {100 * m['test_accuracy']:.2f}% on {m['test_images']} "
        f"images (best epoch {m['best_epoch']}), written to {out}\n"
    )
    return 0
