"""The L-BFGS attack: box constraint, targets reached, small perturbations, confidence."""

import torch

from attacks.base import TargetMode
from attacks.lbfgs import LBFGS
from attacks.pgd import PGD


def test_reaches_targets_inside_the_box(trained_lenet, correct_batch):
    x, y = correct_batch.x[:24], correct_batch.y[:24]
    attack = LBFGS(
        trained_lenet, search_steps=4, max_iter=30, target_mode=TargetMode.RANDOM, seed=0
    )
    result = attack(x, y)
    assert float(result.success.float().mean()) >= 0.9
    assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1


def test_perturbation_is_smaller_than_a_budgeted_attack(trained_lenet, correct_batch):
    # L-BFGS looks for the smallest perturbation; PGD at a sure-to-succeed l2 budget does not.
    x, y = correct_batch.x[:24], correct_batch.y[:24]
    lbfgs = LBFGS(trained_lenet, search_steps=5, max_iter=30)(x, y)
    pgd = PGD(trained_lenet, eps=4.0, norm="l2", steps=10, seed=0)(x, y)
    both = lbfgs.success & pgd.success
    assert both.sum() >= 20
    l2_lbfgs = (lbfgs.x_adv - x).flatten(1).norm(dim=1)[both]
    l2_pgd = (pgd.x_adv - x).flatten(1).norm(dim=1)[both]
    assert l2_lbfgs.median() < 0.75 * l2_pgd.median()


def test_search_on_c_shrinks_the_perturbation(trained_lenet, correct_batch):
    x, y = correct_batch.x[:16], correct_batch.y[:16]
    one_c = LBFGS(trained_lenet, c_init=0.01, search_steps=1, max_iter=30)(x, y)
    searched = LBFGS(trained_lenet, c_init=0.01, search_steps=5, max_iter=30)(x, y)
    norm = lambda r: (r.x_adv - x).flatten(1).norm(dim=1)  # noqa: E731
    both = one_c.success & searched.success
    assert both.sum() >= 12
    assert (norm(searched)[both] <= norm(one_c)[both] + 1e-4).all()
    assert norm(searched)[both].mean() < norm(one_c)[both].mean()


def test_min_confidence_is_reached(trained_lenet, correct_batch):
    x, y = correct_batch.x[:16], correct_batch.y[:16]
    target = (y + 1) % 10
    attack = LBFGS(
        trained_lenet,
        search_steps=5,
        max_iter=30,
        min_confidence=0.95,
        target_mode=TargetMode.GIVEN,
    )
    result = attack(x, y, target=target)
    with torch.no_grad():
        p = trained_lenet(result.x_adv).softmax(1).gather(1, target[:, None]).squeeze(1)
    assert float(result.success.float().mean()) >= 0.8
    assert (p[result.success] >= 0.95).all()
