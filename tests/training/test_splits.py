"""The training split: what a recipe trains on and what it holds out for calibration."""

import torch

from gga_training.recipe import DataSection
from gga_training.splits import evaluation_split, held_out_indices, training_split
from gga_training.train import evaluate_accuracy, train
from models.data import load_dataset
from models.repository import load_model_folder
from tests.training.test_train import _recipe


def _labels(n: int = 1000, classes: int = 10) -> torch.Tensor:
    return torch.arange(n) % classes


def test_parts_are_disjoint_and_cover_the_training_split() -> None:
    y = _labels()
    split = training_split(DataSection(train_limit=600, val_fraction=0.2, unlabelled=50), 3, y)
    parts = [split.train, split.validation, split.unlabelled, split.unused]
    assert [len(p) for p in parts] == [430, 120, 50, 400]
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(len(y)))
    assert torch.equal(
        split.held_out, torch.sort(torch.cat([split.validation, split.unused])).values
    )


def test_split_is_a_function_of_recipe_seed_and_labels() -> None:
    y = _labels()
    data = DataSection(val_fraction=0.1)
    a, b = training_split(data, 0, y), training_split(data, 0, y)
    assert torch.equal(a.validation, b.validation) and torch.equal(a.train, b.train)
    assert not torch.equal(training_split(data, 1, y).validation, a.validation)
    assert len(a.unused) == 0  # no train_limit: every image is trained on or validates


def test_train_limit_keeps_classes_balanced_and_leaves_the_rest_unused() -> None:
    y = torch.sort(_labels()).values  # sorted by class, as the MNIST subset is
    split = training_split(DataSection(train_limit=200, val_fraction=0.0), 0, y)
    assert torch.bincount(y[split.train], minlength=10).tolist() == [20] * 10
    assert len(split.unused) == 800 and len(split.validation) == 0


def test_held_out_indices_of_a_card() -> None:
    y = _labels()
    assert held_out_indices({}, y) is None  # no recipe: not trained here, nothing known
    no_validation = {"name": "m", "architecture": "lenet", "dataset": "mnist"}
    assert held_out_indices({**no_validation, "data": {"val_fraction": 0.0}}, y) is None
    held = held_out_indices({**no_validation, "seed": 4, "data": {"val_fraction": 0.25}}, y)
    assert torch.equal(
        held, torch.sort(training_split(DataSection(0, 0.25), 4, y).validation).values
    )


def test_evaluation_split_shuffles_the_held_out_images_and_keeps_the_rest_apart() -> None:
    y = torch.sort(_labels()).values  # sorted by class: a prefix of held-out images is one class
    recipe = {"name": "m", "architecture": "lenet", "dataset": "mnist", "seed": 2}
    recipe["data"] = {"val_fraction": 0.2}
    held_out, rest = evaluation_split(recipe, y, seed=0)
    assert torch.equal(torch.sort(held_out).values, held_out_indices(recipe, y))
    assert torch.equal(torch.sort(torch.cat([held_out, rest])).values, torch.arange(len(y)))
    assert len(torch.unique(y[held_out[:50]])) >= 8  # shuffled, not sorted by class
    assert torch.equal(evaluation_split(recipe, y, seed=0)[0], held_out)
    assert not torch.equal(evaluation_split(recipe, y, seed=1)[0], held_out)
    assert evaluation_split({}, y, seed=0) is None


def test_training_validates_on_exactly_the_split_fit_calibrates_on(tmp_path, shared_data_dir):
    recipe = _recipe()
    result = train(recipe, tmp_path / "m", data_dir=shared_data_dir, progress=False)
    module = load_model_folder(tmp_path / "m").module
    data = load_dataset("mnist", "train", data_dir=shared_data_dir)
    held = training_split(recipe.data, recipe.seed, data.y)
    x = data.float()
    # The folder keeps the best epoch by validation accuracy: recomputed on the split `gga fit`
    # derives from the card, it is the figure training logged.
    best = max(h["val_accuracy"] for h in result.history)
    assert evaluate_accuracy(module, x[held.validation], data.y[held.validation]) == best
    card_held = held_out_indices(result.card.recipe, data.y)
    assert torch.equal(card_held, held.held_out)
