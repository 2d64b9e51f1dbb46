"""Uniform noise and rotations: the paper's non-adversarial corruptions."""

import pytest
import torch

from attacks.base import AttackParameterError
from attacks.corruptions import Rotation, UniformNoise
from attacks.norms import perturbation_norm
from models.data.transforms import rotate


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.3), ("l2", 3.0)])
def test_noise_is_seeded_and_inside_the_ball(trained_lenet, correct_batch, norm, eps):
    x, y = correct_batch.x, correct_batch.y
    a = UniformNoise(trained_lenet, eps=eps, norm=norm, seed=0)(x, y)
    b = UniformNoise(trained_lenet, eps=eps, norm=norm, seed=0)(x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert (perturbation_norm(a.x_adv - x, norm) <= eps + 1e-5).all()
    assert (a.x_adv != x).any()


def test_noise_hurts_less_than_an_attack_of_the_same_size(trained_lenet, correct_batch):
    from attacks.fgsm import FGSM

    x, y = correct_batch.x, correct_batch.y
    noise = UniformNoise(trained_lenet, eps=0.15, seed=0)(x, y).success.float().mean()
    fgsm = FGSM(trained_lenet, eps=0.15)(x, y).success.float().mean()
    assert noise < fgsm


def test_rotation_angles_stay_in_range_and_match_rotate(trained_lenet, correct_batch):
    x, y = correct_batch.x[:16], correct_batch.y[:16]
    attack = Rotation(trained_lenet, max_degrees=45, seed=0)
    result = attack(x, y)
    angles = attack.last_angles
    assert angles.shape == (16,) and angles.abs().max() <= 45 and angles.abs().min() >= 0
    assert angles.std() > 5  # drawn, not fixed
    assert torch.allclose(result.x_adv, rotate(x, angles).clamp(0, 1))
    assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1


def test_rotation_limit_is_checked(trained_lenet):
    with pytest.raises(AttackParameterError, match="max_degrees"):
        Rotation(trained_lenet, max_degrees=270)
