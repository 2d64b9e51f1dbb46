"""Recipes: the shipped ones parse, typos are errors."""

from pathlib import Path

import pytest

from gga_training.recipe import load_recipe, recipe_from_dict
from models.errors import RecipeError

RECIPES = sorted((Path(__file__).parents[2] / "recipes").rglob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_parse_and_are_named_after_their_file(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem


def test_the_weight_decay_pair_differs_only_in_weight_decay():
    root = Path(__file__).parents[2] / "recipes"
    low = load_recipe(root / "mnist-lenet-low.toml").to_dict()
    high = load_recipe(root / "mnist-lenet-high.toml").to_dict()
    assert low["optim"].pop("weight_decay") == 1e-4
    assert high["optim"].pop("weight_decay") == 1e-1
    for key in ("name", "description"):
        low.pop(key), high.pop(key)
    assert low == high


def test_unknown_options_and_bad_values_are_errors(tmp_path):
    with pytest.raises(RecipeError, match="unknown option"):
        recipe_from_dict({"name": "x", "architecture": "lenet", "dataset": "mnist", "lr": 1})
    with pytest.raises(RecipeError, match=r"\[optim\]: unknown option"):
        recipe_from_dict(
            {"name": "x", "architecture": "lenet", "dataset": "mnist", "optim": {"lrate": 1}}
        )
    with pytest.raises(RecipeError, match="val_fraction"):
        recipe_from_dict(
            {
                "name": "x",
                "architecture": "lenet",
                "dataset": "mnist",
                "data": {"val_fraction": 1.5},
            }
        )
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.toml")


def test_the_cifar_recipes_say_what_the_issue_asks():
    root = Path(__file__).parents[2] / "recipes"
    for name in ("cifar10-resnet20", "cifar10-resnet20-at"):
        r = load_recipe(root / f"{name}.toml")
        assert (r.architecture, r.dataset, r.config["depth"]) == ("resnet", "cifar10", 20)
        assert (r.augment.crop_padding, r.augment.hflip) == (4, True)
        assert (r.optim.optimizer, r.optim.nesterov, r.optim.weight_decay) == ("sgd", True, 5e-4)
        assert r.optim.schedule in ("cosine", "onecycle")
        assert round(r.data.val_fraction * 50_000) == 5_000  # the calibration pool
        assert r.preprocessing == {
            "color_mode": "RGB",
            "resize": True,
            "resize_mode": "center-crop",
        }
    at = load_recipe(root / "cifar10-resnet20-at.toml").adversarial
    assert at.method == "fgsm-rs" and at.eps == pytest.approx(8 / 255) and at.alpha == 0.0
    assert at.step_size == pytest.approx(1.25 * 8 / 255)


def test_new_options_are_checked():
    base = {"name": "x", "architecture": "lenet", "dataset": "mnist"}
    with pytest.raises(RecipeError, match="schedule"):
        recipe_from_dict({**base, "optim": {"schedule": "linear"}})
    with pytest.raises(RecipeError, match="peak"):
        recipe_from_dict({**base, "optim": {"schedule": "onecycle", "peak": 1.0}})
    with pytest.raises(RecipeError, match="label_smoothing"):
        recipe_from_dict({**base, "optim": {"label_smoothing": 1.0}})
    with pytest.raises(RecipeError, match="crop_padding"):
        recipe_from_dict({**base, "augment": {"crop_padding": -1}})
    with pytest.raises(RecipeError, match="method"):
        recipe_from_dict({**base, "adversarial": {"method": "trades"}})
    with pytest.raises(RecipeError, match=r"\[runtime\]: unknown option"):
        recipe_from_dict({**base, "runtime": {"threads": 2}})
