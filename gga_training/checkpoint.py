"""Training checkpoints: everything a run needs to continue as if it had never stopped.

One file per run, rewritten after every epoch: the weights, the optimiser's state, the random
generators (the shuffle/augmentation generator and torch's global one), the epoch and step
counters, the history, the best-so-far weights, and the recipe it belongs to. The learning rate
is a pure function of (epoch, step) (``gga_training.train``), so there is no scheduler object whose
state could drift. The file is written to a temporary name and renamed over the old one, so a
crash mid-write leaves the previous checkpoint intact.
"""

import dataclasses
import logging
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gga_training.recipe import Recipe, recipe_from_dict
from models.errors import CheckpointError, RecipeError

logger = logging.getLogger(__name__)

FORMAT = "gga-train-checkpoint"
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """The state of a run at the end of an epoch.

    Attributes:
        recipe: the recipe's ``to_dict()``; a resume must use the same one.
        epochs: the run's total epoch count (the recipe's, or the ``--epochs`` override).
        epoch: epochs completed.
        step: optimiser steps taken.
        model: the model's ``state_dict``.
        optimizer: the optimiser's ``state_dict``.
        generator: state of the generator that draws shuffles and augmentations.
        torch_rng: state of torch's global generator (dropout, attacks' random starts).
        history: one record per completed epoch.
        best: ``{"accuracy", "epoch", "stale", "state"}``: the best validation score so far,
            its epoch, epochs since, and its weights.
        elapsed: training seconds so far (for epochs per hour across interruptions).
        stopped_early: patience ran out; the run is over.
    """

    recipe: dict[str, Any]
    epochs: int
    epoch: int
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    torch_rng: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    stopped_early: bool = False


def save_checkpoint(path: Path, state: TrainState) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename).

    Args:
        path: the checkpoint file; its folder is created if missing.
        state: the run's state.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state.__dict__}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide it from other users
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> TrainState:
    """Read a checkpoint written by ``save_checkpoint``.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, or not a training checkpoint
            of this format. The file is left as it is.
    """
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume; train without --resume")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({err}); it was left in place: move it "
            "away to train from scratch"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gga training checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')}, this gga "
            f"reads version {FORMAT_VERSION}"
        )
    names = set(TrainState.__dataclass_fields__)
    missing = sorted(names - set(payload))
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return TrainState(**{k: payload[k] for k in names})


def check_same_run(path: Path, state: TrainState, recipe: Recipe, epochs: int) -> None:
    """Refuse to resume ``state`` under a different recipe or epoch count.

    The checkpoint's recipe is parsed again, so an option added to gga since the run started
    (with a default that keeps the old behaviour) does not count as a difference. The
    ``[runtime]`` section (channels_last, compile) may change: it changes how fast the run goes,
    not what it learns (beyond float rounding).

    Raises:
        CheckpointError: names the first options that differ.
    """
    try:
        saved = recipe_from_dict(state.recipe, f"{path} recipe")
    except RecipeError as err:
        raise CheckpointError(f"{path}: its recipe no longer parses ({err})") from err
    if dataclasses.replace(saved, runtime=None) != dataclasses.replace(recipe, runtime=None):
        differ = _differences(saved.to_dict(), recipe.to_dict())
        raise CheckpointError(
            f"{path} was written by a different recipe ({', '.join(differ[:5])} differ); "
            "resume with the recipe it was started with, or move the checkpoint away to "
            "train from scratch"
        )
    if state.epochs != epochs:
        raise CheckpointError(
            f"{path} is a run of {state.epochs} epochs, not {epochs}; resume with the same --epochs"
        )


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "recipe"]
