"""Every registered attack honours the contract: shapes, pixel range, eps ball, untouched model."""

import pytest
import torch

from attacks.base import AttackParameterError, AttackResult, TargetMode
from attacks.norms import perturbation_norm
from attacks.registry import ATTACKS, UnknownAttackError, attack_spec, make_attack
from models.architectures import build_model

# Few iterations: the contract is about shapes and bounds, not strength.
FAST = {
    "fgsm": {},
    "bim": {"steps": 3},
    "pgd": {"steps": 3},
    "lbfgs": {"search_steps": 2, "max_iter": 5},
    "universal": {"max_passes": 1},
    "csa": {"steps": 2},
    "noise": {},
    "rotation": {},
    "corruption": {"severity": 0},
}
EPS = {"linf": 0.1, "l2": 1.0}


def _cases():
    for name, spec in ATTACKS.items():
        norms = ["linf", "l2"] if "norm" in spec.parameters() else [None]
        for norm in norms:
            yield pytest.param(name, norm, id=f"{name}-{norm or 'no-norm'}")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_model("lenet", {"conv1_channels": 4, "conv2_channels": 8, "hidden": 16})
    return net


def test_every_registered_attack_has_fast_parameters():
    assert set(FAST) == set(ATTACKS)


@pytest.mark.parametrize(("name", "norm"), list(_cases()))
def test_attack_contract(model, name, norm):
    spec = attack_spec(name)
    params = dict(FAST[name], seed=0)
    if norm is not None:
        params.update(norm=norm, eps=EPS[norm])
    attack = make_attack(name, model, **params)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 1, 28, 28)
    y = torch.arange(6) % 10
    if spec.needs_fit:
        attack.fit(torch.rand(10, 1, 28, 28))
    result = attack(x, y)

    assert isinstance(result, AttackResult)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert result.success.shape == (6,) and result.success.dtype == torch.bool
    assert result.pred.shape == (6,) and result.target is None
    assert torch.equal(result.success, result.pred != y)
    assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
    assert not result.x_adv.requires_grad
    if spec.bounded and norm is not None:
        norms = perturbation_norm(result.x_adv - x, norm)
        assert (norms <= EPS[norm] + 1e-5).all(), norms
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name", [n for n in ATTACKS if attack_spec(n).cls.supports_targeted])
def test_targeted_contract(model, name):
    attack = make_attack(name, model, target_mode=TargetMode.RANDOM, seed=1, **FAST[name])
    x = torch.rand(6, 1, 28, 28)
    y = torch.arange(6) % 10
    result = attack(x, y)
    assert result.target.shape == (6,) and (result.target != y).all()
    assert torch.equal(result.success, result.pred == result.target)


@pytest.mark.parametrize("name", [n for n in ATTACKS if not attack_spec(n).cls.supports_targeted])
def test_untargeted_only_attacks_refuse_a_target(model, name):
    with pytest.raises(AttackParameterError, match="untargeted only"):
        make_attack(name, model, target_mode=TargetMode.RANDOM)


def test_unknown_attack_lists_the_known_ones(model):
    with pytest.raises(UnknownAttackError, match="available: fgsm"):
        make_attack("deepfool2", model)


def test_parameter_that_does_not_apply_is_named(model):
    with pytest.raises(AttackParameterError, match="does not take steps"):
        make_attack("fgsm", model, steps=10)


def test_none_parameters_keep_defaults(model):
    attack = make_attack("pgd", model, eps=None, steps=None)
    assert attack.eps == 0.3 and attack.steps == 40
