"""``[data] held_out_tail``: a recipe keeps the last N training images out of training."""

import pytest
import torch

from gga_training.recipe import DataSection, recipe_from_dict
from gga_training.splits import TrainingSplit, card_split, held_out_indices, training_split
from models.data import stratified_indices
from models.errors import RecipeError
from models.repository import ModelRepository

SECTIONS = [
    DataSection(),
    DataSection(val_fraction=0.2),
    DataSection(val_fraction=0.0),
    DataSection(train_limit=300, val_fraction=0.1),
    DataSection(train_limit=600, val_fraction=0.2, unlabelled=50),
]


def _labels(n: int = 1000, classes: int = 10) -> torch.Tensor:
    return torch.sort(torch.arange(n) % classes).values  # sorted by class, as the MNIST subset


def _split_before_held_out_tail(data: DataSection, seed: int, y: torch.Tensor) -> TrainingSplit:
    """``training_split`` as it was before ``held_out_tail``, to compare against."""
    everything = torch.arange(len(y))
    pool = stratified_indices(y, data.train_limit, seed=seed) if data.train_limit else everything
    order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))]
    n_val, n_unl = round(data.val_fraction * len(pool)), data.unlabelled
    unused = torch.ones(len(y), dtype=torch.bool)
    unused[pool] = False
    return TrainingSplit(
        order[n_val + n_unl :], order[:n_val], order[n_val : n_val + n_unl], everything[unused]
    )


def _same(a: TrainingSplit, b: TrainingSplit) -> bool:
    return all(
        torch.equal(getattr(a, part), getattr(b, part))
        for part in ("train", "validation", "unlabelled", "unused")
    )


@pytest.mark.parametrize("data", SECTIONS)
@pytest.mark.parametrize("seed", [0, 3])
def test_no_tail_leaves_the_split_as_it_was(data: DataSection, seed: int) -> None:
    y = _labels()
    assert data.held_out_tail == 0
    assert _same(training_split(data, seed, y), _split_before_held_out_tail(data, seed, y))


def test_shipped_cards_without_the_field_keep_their_splits() -> None:
    repo = ModelRepository()
    y = _labels(5000)
    checked = 0
    for name in repo.names():
        recipe = repo.card(name).recipe
        if not recipe or "held_out_tail" in recipe.get("data", {}):
            continue
        parsed = recipe_from_dict(recipe, name)
        assert parsed.data.held_out_tail == 0
        split = card_split(recipe, y)
        assert split is not None
        assert _same(split, _split_before_held_out_tail(parsed.data, parsed.seed, y)), name
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("data", SECTIONS)
def test_a_tail_is_held_out_and_the_rest_split_as_a_shorter_training_set(
    data: DataSection,
) -> None:
    y, tail = _labels(), 200
    with_tail = DataSection(data.train_limit, data.val_fraction, data.unlabelled, tail)
    split = training_split(with_tail, 5, y)
    parts = [split.train, split.validation, split.unlabelled, split.unused]
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(len(y)))
    used = torch.cat([split.train, split.validation, split.unlabelled])
    assert int(used.max()) < len(y) - tail  # nothing of the tail is trained or validated on
    assert set(range(len(y) - tail, len(y))) <= set(split.unused.tolist())
    # The rest is split as a training set that ended before the tail would be.
    shorter = training_split(data, 5, y[:-tail])
    assert _same(
        TrainingSplit(split.train, split.validation, split.unlabelled, split.unused[:-tail]),
        shorter,
    )


def test_a_tail_without_validation_holds_out_exactly_the_tail() -> None:
    y = _labels()
    recipe = {"name": "m", "architecture": "lenet", "dataset": "mnist"}
    recipe["data"] = {"val_fraction": 0.0, "held_out_tail": 150}
    assert torch.equal(held_out_indices(recipe, y), torch.arange(850, 1000))
    parsed = recipe_from_dict(recipe)
    assert parsed.to_dict()["data"]["held_out_tail"] == 150  # written into the card


def test_a_bad_tail_is_refused() -> None:
    recipe = {"name": "m", "architecture": "lenet", "dataset": "mnist"}
    with pytest.raises(RecipeError, match="held_out_tail must be >= 0"):
        recipe_from_dict({**recipe, "data": {"held_out_tail": -1}})
    with pytest.raises(RecipeError, match="holds out all 1000"):
        training_split(DataSection(held_out_tail=1000), 0, _labels())
