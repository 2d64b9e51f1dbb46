"""The CIFAR-10 parts of the evaluation: its budgets and its out-of-distribution sets."""

import pytest
import torch

from gga_lab.evaluate import (
    CIFAR_KINDS,
    OOD_KINDS,
    TABLE_KINDS,
    EvalConfig,
    attack_budgets,
    make_untrusted,
)
from models.architectures import build_model
from models.data import load_dataset


@pytest.fixture(scope="module")
def colour_model_and_images(shared_data_dir):
    torch.manual_seed(0)
    model = build_model("resnet", {"depth": 8, "widths": [4, 8, 16]}).eval()
    x = load_dataset("cifar10", "test", data_dir=shared_data_dir, limit=60).float()
    with torch.no_grad():
        y = model(x).argmax(1)  # every input "correct", so the split below is the model's own
    return model, x, y


def test_budgets_are_the_papers_per_data_set():
    assert attack_budgets("cifar10", EvalConfig()) == {"linf": 8 / 255, "l2": 0.5}
    assert attack_budgets("mnist", EvalConfig()) == {"linf": 0.3, "l2": pytest.approx(3.0)}
    assert attack_budgets("fashion-mnist", EvalConfig()) == {"linf": 0.1, "l2": 1.0}
    assert attack_budgets("cifar10", EvalConfig(eps_linf=0.01)) == {"linf": 0.01, "l2": 0.1}
    assert attack_budgets("cifar10", EvalConfig(eps_l2=0.25))["l2"] == 0.25


def test_the_cifar_ood_sets_are_pooled_and_the_misclassified_corruptions_are_not():
    assert {"ood_mnist", "ood_corrupted"} <= set(OOD_KINDS) & set(TABLE_KINDS)
    assert "corrupted_wrong" in CIFAR_KINDS and "corrupted_wrong" not in TABLE_KINDS


def test_grey_data_sets_become_32x32_rgb(colour_model_and_images, shared_data_dir):
    model, x, y = colour_model_and_images
    cfg = EvalConfig()
    eps = attack_budgets("cifar10", cfg)
    for kind in ("ood_mnist", "ood_dataset"):
        out, info = make_untrusted(
            kind, model, x, y, eps, cfg, "cifar10", str(shared_data_dir), progress=False
        )
        assert out.shape == (60, 3, 32, 32) and info["n_untrusted"] == 60
        # Grey repeated to three channels, in [0, 1].
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_corrupted_images_split_by_whether_the_model_still_gets_them_right(
    colour_model_and_images, shared_data_dir
):
    model, x, y = colour_model_and_images
    cfg = EvalConfig(batch_size=25)
    eps = attack_budgets("cifar10", cfg)
    right, info_right = make_untrusted(
        "ood_corrupted", model, x, y, eps, cfg, "cifar10", None, progress=False
    )
    wrong, info_wrong = make_untrusted(
        "corrupted_wrong", model, x, y, eps, cfg, "cifar10", None, progress=False
    )
    # The same corruptions drawn twice: the two kinds partition the corrupted set.
    assert len(right) + len(wrong) == 60
    assert info_right["success_rate"] == info_wrong["success_rate"] == len(wrong) / 60
    assert 0 < len(wrong) < 60
    # Exactly the corrupted images the model gets right and wrong, at severity 5.
    from attacks.corruptions import Corruption

    attack = Corruption(model, "random", 5, seed=cfg.seed + 7)
    results = [attack(x[i : i + 25], y[i : i + 25]) for i in range(0, 60, 25)]
    assert {s for r in [attack.last_choices] for _, s in r} == {5}
    corrupted = torch.cat([r.x_adv for r in results])
    fooled = torch.cat([r.success for r in results])
    assert torch.equal(right, corrupted[~fooled]) and torch.equal(wrong, corrupted[fooled])
    with torch.no_grad():
        assert torch.equal(model(right).argmax(1), y[~fooled])
        assert not bool((model(wrong).argmax(1) == y[fooled]).any())
