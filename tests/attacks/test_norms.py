"""Norms, projections and random points of the eps balls."""

import pytest
import torch

from attacks.norms import perturbation_norm, project, random_in_ball, steepest_step


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_lands_in_the_ball_and_keeps_inner_points(norm):
    delta = torch.randn(16, 3, 5, 5)
    eps = 0.5
    projected = project(delta, eps, norm)
    assert (perturbation_norm(projected, norm) <= eps + 1e-6).all()
    small = 0.01 * delta / perturbation_norm(delta, norm).view(-1, 1, 1, 1)
    assert torch.allclose(project(small, eps, norm), small)


def test_l2_projection_keeps_direction():
    delta = torch.randn(4, 1, 6, 6)
    projected = project(delta, 0.1, "l2")
    cos = torch.nn.functional.cosine_similarity(delta.flatten(1), projected.flatten(1))
    assert torch.allclose(cos, torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_steepest_step_has_unit_norm(norm):
    step = steepest_step(torch.randn(8, 1, 4, 4), norm)
    assert torch.allclose(perturbation_norm(step, norm), torch.ones(8), atol=1e-5)


def test_steepest_step_of_zero_gradient_is_zero():
    assert torch.equal(steepest_step(torch.zeros(2, 1, 3, 3), "l2"), torch.zeros(2, 1, 3, 3))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_points_fill_the_ball(norm):
    like = torch.zeros(2000, 1, 2, 2)
    eps = 0.3
    delta = random_in_ball(like, eps, norm, torch.Generator().manual_seed(0))
    norms = perturbation_norm(delta, norm)
    assert (norms <= eps + 1e-6).all()
    # uniform in the ball: in 4 dimensions the radius quantile is eps * u ** (1/4) (l2);
    # for l_inf the max of 4 uniform |u| has median eps * 0.5 ** (1/4) too
    assert abs(float(norms.median()) - eps * 0.5**0.25) < 0.02
