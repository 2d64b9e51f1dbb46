"""The Attack base: targets, success, eval mode and untouched parameters, input checks."""

import pytest
import torch
from torch import nn

from attacks.base import Attack, AttackParameterError, TargetMode, check_eps, eval_mode
from attacks.fgsm import FGSM
from attacks.pgd import PGD
from tests.helpers.models import TinyLinear, seeded


class Identity(Attack):
    """Returns the input unchanged: success is then exactly the clean error."""

    name = "identity"

    def forward(self, x, y, target):
        return x


def test_untargeted_success_is_misclassification():
    model = seeded(TinyLinear)
    x = torch.rand(32, 1, 8, 8)
    y = torch.randint(0, 5, (32,))
    result = Identity(model)(x, y)
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    assert result.target is None
    assert torch.equal(result.pred, pred)
    assert torch.equal(result.success, pred != y)
    assert result.success.dtype == torch.bool


def test_given_target_success_is_hitting_the_target():
    model = seeded(TinyLinear)
    x = torch.rand(32, 1, 8, 8)
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    target = pred.clone()
    target[::2] = (pred[::2] + 1) % 5
    result = Identity(model, target_mode=TargetMode.GIVEN)(x, pred, target=target)
    assert torch.equal(result.target, target)
    assert torch.equal(result.success, pred == target)


def test_given_mode_without_target_says_how_to_pass_one():
    with pytest.raises(AttackParameterError, match="target="):
        Identity(seeded(TinyLinear), target_mode=TargetMode.GIVEN)(
            torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
        )


def test_random_targets_are_other_classes_and_seeded():
    model = seeded(TinyLinear)
    x = torch.rand(500, 1, 8, 8)
    y = torch.randint(0, 5, (500,))
    first = Identity(model, target_mode=TargetMode.RANDOM, seed=3)(x, y).target
    again = Identity(model, target_mode=TargetMode.RANDOM, seed=3)(x, y).target
    assert torch.equal(first, again)
    assert (first != y).all()
    # every other class is drawn: offsets 1..4 all occur
    assert set(((first - y) % 5).tolist()) == {1, 2, 3, 4}


def test_least_likely_target_is_the_argmin():
    model = seeded(TinyLinear)
    x = torch.rand(16, 1, 8, 8)
    result = Identity(model, target_mode=TargetMode.LEAST_LIKELY)(x, torch.zeros(16))
    with torch.no_grad():
        assert torch.equal(result.target, model(x).argmin(dim=1))


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 5)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.fc(self.drop(x.flatten(1)))


@pytest.mark.parametrize("attack_cls", [FGSM, PGD])
def test_mode_parameters_and_grads_are_untouched(attack_cls):
    torch.manual_seed(0)
    model = DropoutNet().train()  # as during adversarial training
    model.drop.eval()  # a mixed state must come back exactly as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 5, (8,))
    attack = attack_cls(model, eps=0.1)
    seen = []
    model.register_forward_pre_hook(lambda m, _: seen.append(m.drop.training or m.training))
    attack(x, y)
    assert seen and not any(seen), "the attack must run the model in eval mode"
    assert model.training and not model.drop.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_eval_mode_restores_flags_after_an_error():
    model = DropoutNet().train()
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training
        raise RuntimeError("boom")
    assert model.training and model.drop.training


@pytest.mark.parametrize("bad", [torch.full((2, 1, 8, 8), 1.5), torch.full((2, 1, 8, 8), -0.1)])
def test_pixels_outside_unit_range_are_refused(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FGSM(seeded(TinyLinear), eps=0.1)(bad, torch.zeros(2, dtype=torch.long))


def test_label_count_must_match():
    with pytest.raises(ValueError, match="labels"):
        FGSM(seeded(TinyLinear), eps=0.1)(torch.rand(3, 1, 8, 8), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize(
    ("eps", "norm", "match"),
    [
        (0, "linf", "positive"),
        (-1, "l2", "positive"),
        (1.5, "linf", "above 1"),
        (float("nan"), "linf", "positive"),
        (0.1, "l1", "unknown norm"),
    ],
)
def test_invalid_eps_and_norm(eps, norm, match):
    with pytest.raises(AttackParameterError, match=match):
        check_eps(eps, norm)


def test_l2_eps_may_exceed_one():
    assert check_eps(3.0, "l2") == 3.0
