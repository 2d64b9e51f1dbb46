"""Recipes: the shipped ones parse, typos are errors."""

from pathlib import Path

import pytest

from models.errors import RecipeError
from models.recipe import load_recipe, recipe_from_dict

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
