"""The universal perturbation: one input-independent r that fools most inputs it never saw."""

import pytest
import torch

from attacks.base import NotFittedError
from attacks.corruptions import UniformNoise
from attacks.norms import perturbation_norm
from attacks.universal import UniversalPerturbation


@pytest.fixture(scope="module")
def fitted(trained_lenet, mnist):
    # The training file is sorted by class: every 25th image gives 20 of each digit.
    x_fit = mnist["train"].x[::25]
    return UniversalPerturbation(trained_lenet, eps=0.3, max_passes=3, seed=0).fit(x_fit)


def test_perturbation_is_one_tensor_inside_the_ball(fitted):
    v = fitted.perturbation
    assert v.shape == (1, 1, 28, 28)
    assert float(perturbation_norm(v, "linf")) <= 0.3 + 1e-6
    assert 0 < fitted.fooling_rate <= 1


def test_the_same_perturbation_is_added_to_every_input(fitted, mnist):
    x = mnist["test"].x[:50]
    delta = fitted.perturb(x) - x
    v = fitted.perturbation.expand_as(x)
    unclipped = ((x + v) > 0) & ((x + v) < 1)
    assert unclipped.float().mean() > 0.3
    assert torch.allclose(delta[unclipped], v[unclipped], atol=1e-6)
    # and it does not depend on which batch an input comes in
    assert torch.equal(fitted.perturb(x[:7]), fitted.perturb(x)[:7])


def test_it_fools_unseen_inputs_far_more_than_noise(fitted, trained_lenet, mnist):
    x, y = mnist["test"].x, mnist["test"].y
    uap = float(fitted(x, y).success.float().mean())
    noise = float(UniformNoise(trained_lenet, eps=0.3, seed=0)(x, y).success.float().mean())
    assert uap > 0.5
    assert uap > noise + 0.3


def test_l2_version_stays_in_its_ball(trained_lenet, mnist):
    attack = UniversalPerturbation(trained_lenet, eps=2.0, norm="l2", max_passes=1, seed=0)
    attack.fit(mnist["train"].x[::100])
    assert float(perturbation_norm(attack.perturbation, "l2")) <= 2.0 + 1e-5


def test_using_it_before_fit_says_to_fit(trained_lenet):
    with pytest.raises(NotFittedError, match=r"call fit\(x\) first"):
        UniversalPerturbation(trained_lenet)(torch.rand(2, 1, 28, 28), torch.zeros(2))


def test_inputs_of_another_shape_are_refused(fitted):
    with pytest.raises(ValueError, match="fitted on"):
        fitted.perturb(torch.rand(2, 3, 32, 32))
