"""DeepFool lands just past the nearest boundary: fooled, barely, and by a small perturbation."""

import pytest
import torch

from attacks.base import AttackParameterError
from attacks.deepfool import DeepFool
from attacks.pgd import PGD


def margins(model, x):
    """Top logit minus the runner-up, per input."""
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_crosses_the_boundary_just(trained_lenet, correct_batch, norm) -> None:
    x, y = correct_batch.x, correct_batch.y
    result = DeepFool(trained_lenet, norm=norm, steps=50)(x, y)
    assert result.success.float().mean() >= 0.95
    fooled = result.success
    delta = (result.x_adv - x)[fooled]
    # Just past the boundary: the winning margin is a small fraction of the clean one ...
    assert (
        margins(trained_lenet, result.x_adv[fooled]).median()
        < 0.2 * margins(trained_lenet, x[fooled]).median()
    )
    # ... and most inputs go back to their label with a fifth of the perturbation taken off.
    with torch.no_grad():
        back = trained_lenet((x[fooled] + 0.8 * delta).clamp(0, 1)).argmax(dim=1)
    assert (back == y[fooled]).float().mean() >= 0.8


def test_deepfool_is_smaller_than_a_full_budget_pgd(trained_lenet, correct_batch) -> None:
    x, y = correct_batch.x, correct_batch.y
    minimal = DeepFool(trained_lenet, norm="l2")(x, y)
    strong = PGD(trained_lenet, eps=3.0, norm="l2", steps=20, seed=0)(x, y)
    both = minimal.success & strong.success
    size = lambda r: (r.x_adv - x)[both].flatten(1).norm(dim=1).median()  # noqa: E731
    assert size(minimal) < 0.5 * size(strong)


def test_deepfool_leaves_a_fooled_input_alone(trained_lenet, correct_batch) -> None:
    x, y = correct_batch.x[:8], correct_batch.y[:8]
    wrong = (y + 1) % 10  # every input is already "fooled" for these labels
    result = DeepFool(trained_lenet)(x, wrong)
    assert torch.equal(result.x_adv, x)


@pytest.mark.parametrize(
    "kwargs", [{"norm": "l1"}, {"steps": 0}, {"overshoot": -0.1}, {"candidates": 0}]
)
def test_deepfool_refuses_bad_parameters(trained_lenet, kwargs) -> None:
    with pytest.raises(AttackParameterError):
        DeepFool(trained_lenet, **kwargs)
