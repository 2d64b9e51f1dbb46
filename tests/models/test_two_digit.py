"""Two-digit MNIST (issue 25): the pairs built from the real MNIST files, its out-of-distribution
inputs, and the zoo model trained on it."""

from collections import Counter
from pathlib import Path

import pytest
import torch

from gga_lab.evaluate import EvalConfig, _untrusted_inputs
from gga_training.recipe import load_recipe
from gga_training.splits import card_split, training_split
from models.data import load_dataset
from models.data.ood import other_images, single_digits
from models.data.two_digit import (
    CLASS_NAMES,
    PAIRS_PER_CLASS,
    TAIL_PAIRS,
    pair_indices,
    pair_labels,
    reserved_digits,
    train_pair_indices,
)
from models.errors import DataError
from models.repository import ModelRepository

SHAPE = (1, 28, 56)
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "two-digit-mnist.toml"


def _labels_by_image(images: torch.Tensor, labels: torch.Tensor) -> dict[bytes, set[int]]:
    """Each distinct 28x28 image's bytes -> the labels it carries in the split."""
    found: dict[bytes, set[int]] = {}
    for image, label in zip(images.numpy(), labels.tolist(), strict=True):
        found.setdefault(image.tobytes(), set()).add(label)
    return found


@pytest.fixture(scope="module")
def mnist(shared_data_dir):
    """The MNIST digits of each split: their images and an image -> labels lookup."""
    splits = {s: load_dataset("mnist", s, data_dir=shared_data_dir) for s in ("train", "test")}
    return {s: (d, _labels_by_image(d.x, d.y)) for s, d in splits.items()}


@pytest.fixture(scope="module")
def pairs(shared_data_dir):
    return {
        s: load_dataset("two-digit-mnist", s, data_dir=shared_data_dir) for s in ("train", "test")
    }


@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_classes_and_balance(pairs, split):
    data = pairs[split]
    n = 100 * PAIRS_PER_CLASS[split]
    assert data.x.shape == (n, *SHAPE) and data.x.dtype == torch.uint8
    assert data.shape == SHAPE and data.name == "two-digit-mnist" and data.drawn == "all"
    assert data.class_names == CLASS_NAMES and CLASS_NAMES[7] == "07" and len(CLASS_NAMES) == 100
    # All 100 classes, exactly balanced.
    assert data.class_counts() == [PAIRS_PER_CLASS[split]] * 100


@pytest.mark.parametrize("split", ["train", "test"])
def test_each_half_is_a_digit_of_the_same_split_with_the_labelled_digit(pairs, mnist, split):
    data, other = pairs[split], "test" if split == "train" else "train"
    own, foreign = mnist[split][1], mnist[other][1]
    halves = {"left": data.x[:, 0, :, :28], "right": data.x[:, 0, :, 28:]}
    digits = {"left": data.y // 10, "right": data.y % 10}
    for side, images in halves.items():
        for image, digit in zip(images.numpy(), digits[side].tolist(), strict=True):
            key = image.tobytes()
            assert digit in own[key]  # a digit of this split, and the one the label names
            assert key not in foreign  # never a digit of the other split


def test_digits_are_used_evenly(pairs, mnist):
    train_digits, test_digits = mnist["train"][0], mnist["test"][0]
    # Train: 5,000 digits (500 a class), each exactly 12 times on each side.
    train = train_pair_indices(train_digits.y)
    for side in (0, 1):
        assert set(Counter(train[:, side].tolist()).values()) == {12}
    assert torch.equal(pairs["train"].y, pair_labels(train_digits.y, train))
    assert torch.equal(pairs["train"].x[:, :, :, :28], train_digits.x[train[:, 0]])
    # Test: each of the 10,000 digits about twice (once a side on average).
    test = pair_indices(test_digits.y, PAIRS_PER_CLASS["test"])
    uses = torch.bincount(test.flatten(), minlength=len(test_digits))
    assert uses.sum() == 20_000 and int(uses.max()) <= 4
    assert float((uses >= 1).float().mean()) > 0.98
    # The loader places exactly these digits, labelled from MNIST's labels.
    assert torch.equal(pairs["test"].y, pair_labels(test_digits.y, test))
    assert torch.equal(pairs["test"].x[:, :, :, 28:], test_digits.x[test[:, 1]])


def test_reserved_digits_appear_only_in_the_tail(pairs, mnist):
    train_digits = mnist["train"][0]
    reserved = reserved_digits(train_digits.y, 50)
    assert torch.bincount(train_digits.y[reserved]).tolist() == [50] * 10
    indices = train_pair_indices(train_digits.y)
    head, tail = indices[:-TAIL_PAIRS], indices[-TAIL_PAIRS:]
    assert set(tail.flatten().tolist()) == set(reserved.tolist())
    assert set(head.flatten().tolist()).isdisjoint(reserved.tolist())
    # Both blocks are class-balanced: 540 and 60 pairs a class.
    data = pairs["train"]
    assert torch.bincount(data.y[:-TAIL_PAIRS], minlength=100).tolist() == [540] * 100
    assert torch.bincount(data.y[-TAIL_PAIRS:], minlength=100).tolist() == [60] * 100

    # In the loaded images: no digit image of the tail is in any head pair, on either side.
    def images(block: torch.Tensor) -> set[bytes]:
        halves = torch.cat([block[:, 0, :, :28], block[:, 0, :, 28:]]).numpy()
        return {image.tobytes() for image in halves}

    tail_images = images(data.x[-TAIL_PAIRS:])
    assert len(tail_images) == 500 and tail_images.isdisjoint(images(data.x[:-TAIL_PAIRS]))


def test_train_pairing_reserves_digits_for_any_digit_counts():
    labels = torch.arange(60) % 10  # six digits a class
    indices = train_pair_indices(
        labels, pairs_per_class=5, tail_pairs_per_class=2, tail_digits_per_class=2, seed=3
    )
    assert indices.shape == (500, 2)
    head, tail = indices[:300], indices[300:]
    reserved = reserved_digits(labels, 2, seed=3)
    assert set(tail.flatten().tolist()) == set(reserved.tolist())
    assert set(head.flatten().tolist()).isdisjoint(reserved.tolist())
    for block in (head, tail):  # each block: every class equally often, round by round
        counts = torch.bincount(pair_labels(labels, block), minlength=100)
        assert len(set(counts.tolist())) == 1
    assert torch.equal(indices, train_pair_indices(labels, 5, 2, 2, seed=3))
    with pytest.raises(ValueError, match="leaves none"):
        reserved_digits(labels, 6)


def test_the_recipe_holds_out_exactly_the_tail(pairs):
    recipe = load_recipe(RECIPE)
    n = len(pairs["train"])
    split = training_split(recipe.data, recipe.seed, pairs["train"].y)
    assert recipe.data.held_out_tail == TAIL_PAIRS
    assert torch.equal(split.held_out, torch.arange(n - TAIL_PAIRS, n))
    assert len(split.validation) == 0 and len(split.train) == n - TAIL_PAIRS
    # gga fit recomputes the same split from the zoo model's card.
    repo = ModelRepository()
    if "two-digit-mnist" in repo.names():
        card = repo.card("two-digit-mnist")
        from_card = card_split(card.recipe, pairs["train"].y)
        assert from_card is not None and torch.equal(from_card.held_out, split.held_out)


def test_loads_are_deterministic_and_limit_keeps_a_balanced_prefix(pairs, shared_data_dir):
    again = load_dataset("two-digit-mnist", "test", data_dir=shared_data_dir)
    assert torch.equal(again.x, pairs["test"].x) and torch.equal(again.y, pairs["test"].y)
    # The pairs do not depend on the caller's seed: every command sees the same data set.
    head = load_dataset("two-digit-mnist", "train", data_dir=shared_data_dir, limit=250, seed=3)
    assert torch.equal(head.x, pairs["train"].x[:250]) and torch.equal(
        head.y, pairs["train"].y[:250]
    )
    assert set(head.class_counts()) == {2, 3} and head.drawn.startswith("the first 250 pairs")


def test_pairing_is_balanced_for_any_digit_counts():
    labels = torch.tensor([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9])
    pairs = pair_indices(labels, pairs_per_class=4, seed=1)
    assert pairs.shape == (400, 2)
    assert torch.bincount(pair_labels(labels, pairs), minlength=100).tolist() == [4] * 100
    # Round by round: every prefix of 100 holds each class once.
    assert sorted(pair_labels(labels, pairs[100:200]).tolist()) == list(range(100))
    # The three 0s share the 40 left slots of class 0 evenly.
    lefts = Counter(pairs[:, 0].tolist())
    assert {lefts[i] for i in (0, 1, 2)} <= {13, 14}
    with pytest.raises(ValueError, match="no digit 5"):
        pair_indices(labels[labels != 5], 1)


def test_missing_mnist_names_the_source(tmp_path):
    with pytest.raises(DataError, match="two-digit-mnist is built from mnist"):
        load_dataset("two-digit-mnist", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- out-of-distribution inputs


def test_single_digits_fill_one_half(shared_data_dir, mnist):
    x = single_digits(40, SHAPE, data_dir=shared_data_dir, seed=2)
    assert x.shape == (40, *SHAPE) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x, single_digits(40, SHAPE, data_dir=shared_data_dir, seed=2))
    left_blank = x[:, :, :, :28].flatten(1).amax(1) == 0
    right_blank = x[:, :, :, 28:].flatten(1).amax(1) == 0
    assert torch.equal(left_blank, ~right_blank) and 0 < int(left_blank.sum()) < 40
    digit = torch.where(left_blank[:, None, None], x[:, 0, :, 28:], x[:, 0, :, :28])
    test_digits = mnist["test"][1]
    assert all((d * 255).round().byte().numpy().tobytes() in test_digits for d in digit)


def test_other_images_are_fashion_items_side_by_side(shared_data_dir):
    x = other_images("two-digit-mnist", 30, SHAPE, data_dir=shared_data_dir, seed=1)
    assert x.shape == (30, *SHAPE)
    fashion = load_dataset("fashion-mnist", "test", data_dir=shared_data_dir)
    items = {image.tobytes() for image in fashion.x[:, 0].numpy()}
    for half in (x[:, 0, :, :28], x[:, 0, :, 28:]):
        assert all((h * 255).round().byte().numpy().tobytes() in items for h in half)
    # Other data sets keep their single images.
    assert other_images("mnist", 3, (1, 28, 28), data_dir=shared_data_dir).shape == (3, 1, 28, 28)


def test_evaluation_draws_the_two_digit_ood_kinds(shared_data_dir):
    cfg = EvalConfig(kinds=("ood_dataset", "ood_mnist", "ood_noise", "ood_photos", "ood_corrupted"))
    x, y = torch.zeros(12, *SHAPE), torch.zeros(12, dtype=torch.long)
    inputs, info = _untrusted_inputs(
        torch.nn.Identity(), x, y, cfg, "two-digit-mnist", str(shared_data_dir), False
    )
    # ood_corrupted is CIFAR-10's; single MNIST digits (ood_mnist) are two-digit MNIST's too.
    assert set(inputs) == {"ood_dataset", "ood_mnist", "ood_noise", "ood_photos"}
    for kind, out in inputs.items():
        assert out.shape == (12, *SHAPE), kind
        assert float(out.min()) >= 0 and float(out.max()) <= 1, kind
        assert info[kind]["n_untrusted"] == 12
    # An MNIST model still skips ood_mnist.
    mnist_inputs, _ = _untrusted_inputs(
        torch.nn.Identity(), x[..., :28], y, cfg, "mnist", str(shared_data_dir), False
    )
    assert "ood_mnist" not in mnist_inputs


# ---------------------------------------------------------------- the zoo model


def test_zoo_model_classifies_test_pairs(pairs):
    repo = ModelRepository()
    if "two-digit-mnist" not in repo.names():
        pytest.skip("two-digit-mnist is not in models/zoo (train recipes/two-digit-mnist.toml)")
    loaded = repo.load("two-digit-mnist")
    assert loaded.card.dataset == "two-digit-mnist" and loaded.card.input_shape == SHAPE
    assert loaded.card.class_names == CLASS_NAMES and loaded.card.metrics["test_accuracy"] >= 0.97
    test, train = pairs["test"], pairs["train"]
    with torch.no_grad():
        predicted = loaded.module(test.float()[:200]).argmax(1)
        # The held-out tail (pairs of digits never trained on) is about as hard as the test.
        held_out = loaded.module(train.x[-200:].float() / 255).argmax(1)
    assert float((predicted == test.y[:200]).float().mean()) >= 0.94
    assert float((held_out == train.y[-200:]).float().mean()) >= 0.94
