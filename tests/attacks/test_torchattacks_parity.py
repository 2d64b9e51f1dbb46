"""Cross-check against torchattacks (a library we did not write): same model, inputs, parameters."""

import pytest
import torch

from attacks.fgsm import FGSM
from attacks.pgd import PGD

torchattacks = pytest.importorskip("torchattacks")

TOLERANCE = 0.03  # success rates within 3 points


def _rate(model, x_adv, y):
    with torch.no_grad():
        return float((model(x_adv).argmax(1) != y).float().mean())


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.2])
def test_fgsm_matches_torchattacks(trained_lenet, mnist, eps):
    x, y = mnist["test"].x, mnist["test"].y
    ours = FGSM(trained_lenet, eps=eps)(x, y)
    theirs = torchattacks.FGSM(trained_lenet, eps=eps)(x, y)
    assert abs(float(ours.success.float().mean()) - _rate(trained_lenet, theirs, y)) <= TOLERANCE


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.2])
@pytest.mark.parametrize("random_start", [False, True])
def test_linf_pgd_matches_torchattacks(trained_lenet, mnist, eps, random_start):
    x, y = mnist["test"].x, mnist["test"].y
    ours = PGD(
        trained_lenet, eps=eps, step_size=eps / 4, steps=10, random_start=random_start, seed=0
    )(x, y)
    torch.manual_seed(0)
    theirs = torchattacks.PGD(
        trained_lenet, eps=eps, alpha=eps / 4, steps=10, random_start=random_start
    )(x, y)
    assert abs(float(ours.success.float().mean()) - _rate(trained_lenet, theirs, y)) <= TOLERANCE


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_l2_pgd_matches_torchattacks(trained_lenet, mnist, eps):
    x, y = mnist["test"].x, mnist["test"].y
    ours = PGD(trained_lenet, eps=eps, norm="l2", step_size=eps / 4, steps=10, seed=0)(x, y)
    torch.manual_seed(0)
    theirs = torchattacks.PGDL2(trained_lenet, eps=eps, alpha=eps / 4, steps=10)(x, y)
    assert abs(float(ours.success.float().mean()) - _rate(trained_lenet, theirs, y)) <= TOLERANCE


def test_targeted_pgd_matches_torchattacks(trained_lenet, mnist):
    x, y = mnist["test"].x, mnist["test"].y
    target = (y + 1) % 10
    ours = PGD(
        trained_lenet, eps=0.2, step_size=0.05, steps=10, random_start=False, target_mode=None
    )(x, y, target=target)
    attack = torchattacks.PGD(trained_lenet, eps=0.2, alpha=0.05, steps=10, random_start=False)
    attack.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 10)
    theirs = attack(x, y)
    with torch.no_grad():
        their_rate = float((trained_lenet(theirs).argmax(1) == target).float().mean())
    assert abs(float(ours.success.float().mean()) - their_rate) <= TOLERANCE
