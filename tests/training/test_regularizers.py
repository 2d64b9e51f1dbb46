"""VAT and distillation losses on cases that can be checked by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gga_training.regularizers import (
    distillation_loss,
    kl_from_logits,
    vat_loss,
    virtual_adversarial_perturbation,
)


def test_kl_matches_a_hand_computation():
    p = torch.tensor([[math.log(0.5), math.log(0.5)]])
    q = torch.tensor([[math.log(0.25), math.log(0.75)]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_from_logits(p, q).item() == pytest.approx(expected, rel=1e-6)
    assert kl_from_logits(p, p).item() == pytest.approx(0.0, abs=1e-7)


def test_vat_direction_for_a_two_class_linear_model_is_the_weight_difference():
    # For logits W x with two classes the Fisher matrix is p1 p2 (w1 - w2)(w1 - w2)^T: rank one,
    # so the power iteration must return +-(w1 - w2) scaled to eps.
    torch.manual_seed(0)
    model = nn.Linear(6, 2, bias=False)
    x = torch.randn(3, 6)
    r = virtual_adversarial_perturbation(model, x, model(x), eps=0.5, xi=1e-3)
    direction = model.weight[0] - model.weight[1]
    for row in r:
        assert row.norm().item() == pytest.approx(0.5, rel=1e-5)
        cosine = F.cosine_similarity(row, direction, dim=0).abs().item()
        assert cosine == pytest.approx(1.0, abs=1e-4)


def test_vat_loss_is_positive_and_leaves_parameter_grads_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(5, 6)
    loss = vat_loss(model, x, model(x), eps=1.0)
    assert all(p.grad is None for p in model.parameters())
    assert loss.item() > 0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_distillation_with_the_teacher_itself_reduces_to_the_hard_loss():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 2])
    loss = distillation_loss(logits, logits, labels, temperature=20.0, weight=0.9)
    assert loss.item() == pytest.approx(0.1 * F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_distillation_soft_term_is_t_squared_kl():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # softmax at T=1: (0.75, 0.25)
    loss = distillation_loss(student, teacher, torch.tensor([0]), temperature=1.0, weight=1.0)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss_t2 = distillation_loss(2 * student, 2 * teacher, torch.tensor([0]), 2.0, 1.0)
    assert loss_t2.item() == pytest.approx(4 * expected, rel=1e-6)
