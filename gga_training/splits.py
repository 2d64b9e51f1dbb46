"""Which training images a recipe trains on, and which it holds out.

``gga train`` and ``gga fit`` both need the answer: training uses the train part, and the trust
detector calibrates on the held-out part, because a classifier is more confident and more
regular on images it has fitted than on new ones, and calibrating on those would make the trust
score flag more new clean inputs than its alpha promises. The split is a pure function of the
recipe's data section, its seed and the labels, so it can be recomputed any time from a model
card.
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gga_training.recipe import DataSection, recipe_from_dict
from models.data import stratified_indices
from models.errors import RecipeError


@dataclass(frozen=True)
class TrainingSplit:
    """Indices into the full training split of a data set.

    Attributes:
        train: labelled images the model is trained on.
        validation: held out for validation (and early stopping, where the recipe asks).
        unlabelled: images whose labels are dropped; VAT trains on them.
        unused: left out by the recipe's ``train_limit`` or ``held_out_tail``; the model never
            sees them.
    """

    train: Tensor
    validation: Tensor
    unlabelled: Tensor
    unused: Tensor

    @property
    def held_out(self) -> Tensor:
        """Sorted indices of the images the model was never trained on (validation + unused)."""
        return torch.sort(torch.cat([self.validation, self.unused])).values


def training_split(
    data: DataSection, seed: int, y: Tensor, generator: torch.Generator | None = None
) -> TrainingSplit:
    """The seeded split of a training set of labels ``y`` that a recipe trains with.

    Args:
        data: the recipe's data section.
        seed: the recipe's seed.
        y: int64 labels of the full training split, (N,).
        generator: draw the split's permutation from this generator, seeded with ``seed``
            (default: a fresh one). Training passes the generator it goes on to draw its
            shuffles from, so that its shuffles stay what they were for the shipped models.

    Returns:
        The four disjoint index sets, together covering ``range(N)``. The last
        ``data.held_out_tail`` indices are all unused; the other parts are drawn from the rest
        exactly as they would be from a training split that ended before the tail.

    Raises:
        RecipeError: ``held_out_tail`` leaves no image to train on.
    """
    everything = torch.arange(len(y))
    if data.held_out_tail and data.held_out_tail >= len(y):
        raise RecipeError(
            f"[data] held_out_tail = {data.held_out_tail} holds out all {len(y)} training images"
        )
    pool = everything[: len(y) - data.held_out_tail]
    if data.train_limit:
        # A seeded, class-balanced subset: some training files (the MNIST subset, image folders)
        # are sorted by class, so their first N images hold one or two classes.
        pool = pool[stratified_indices(y[pool], data.train_limit, seed=seed)]
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    order = pool[torch.randperm(len(pool), generator=generator)]
    n_val = round(data.val_fraction * len(pool))
    n_unl = data.unlabelled
    unused = torch.ones(len(y), dtype=torch.bool)
    unused[pool] = False
    return TrainingSplit(
        train=order[n_val + n_unl :],
        validation=order[:n_val],
        unlabelled=order[n_val : n_val + n_unl],
        unused=everything[unused],
    )


def card_split(recipe: dict[str, Any] | None, y: Tensor) -> TrainingSplit | None:
    """The split a model card's recipe trained with, or ``None`` for a card without a recipe.

    Args:
        recipe: the ``recipe`` of a model card (empty for a model not trained by ``gga train``).
        y: labels of the full training split the recipe names.

    Raises:
        RecipeError: the card's recipe is malformed.
    """
    if not recipe:
        return None
    parsed = recipe_from_dict(recipe, "card.json recipe")
    return training_split(parsed.data, parsed.seed, y)


def held_out_indices(recipe: dict[str, Any] | None, y: Tensor) -> Tensor | None:
    """The training images a model card's recipe never trained on, or ``None`` if unknown.

    Returns:
        Sorted indices, or ``None`` when the card has no recipe or it holds nothing out.

    Raises:
        RecipeError: the card's recipe is malformed.
    """
    split = card_split(recipe, y)
    if split is None or len(split.held_out) == 0:
        return None
    return split.held_out


def evaluation_split(
    recipe: dict[str, Any] | None, y: Tensor, seed: int
) -> tuple[Tensor, Tensor] | None:
    """Held-out images to evaluate on, and the rest, or ``None`` when nothing is held out.

    For choosing detector settings without the test set (``gga evaluate --split held-out``).

    Returns:
        ``(held_out, rest)``: the held-out indices shuffled with ``seed`` (they are sorted, and
        some training files are stored class by class, so a prefix would hold few classes), and
        every other index: the images the model was trained on, for fitting baselines.

    Raises:
        RecipeError: the card's recipe is malformed.
    """
    held_out = held_out_indices(recipe, y)
    if held_out is None:
        return None
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[held_out] = False
    order = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed))
    return held_out[order], torch.nonzero(rest).flatten()
