"""Every registered attack honours the contract: shapes, pixel range, eps ball, untouched model.

``check_contract`` is also run on the attacks the lab adds (tests/lab/test_attack_registry.py).
"""

import pytest
import torch

from attacks.base import AttackParameterError, AttackResult, TargetMode
from attacks.norms import perturbation_norm
from attacks.registry import ATTACKS, AttackRegistry, AttackSpec, UnknownAttackError
from models.architectures import build_model

# Few iterations: the contract is about shapes and bounds, not strength.
FAST = {
    "fgsm": {},
    "bim": {"steps": 3},
    "pgd": {"steps": 3},
    "lbfgs": {"search_steps": 2, "max_iter": 5},
    "deepfool": {"steps": 5},
    "universal": {"max_passes": 1},
    "noise": {},
    "rotation": {},
    "corruption": {"severity": 0},
}
EPS = {"linf": 0.1, "l2": 1.0}


def contract_cases(registry: AttackRegistry, names: list[str]):
    """One case per attack of ``names`` and per norm it takes."""
    for name in names:
        norms = ["linf", "l2"] if "norm" in registry.spec(name).parameters() else [None]
        for norm in norms:
            yield pytest.param(name, norm, id=f"{name}-{norm or 'no-norm'}")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_model("lenet", {"conv1_channels": 4, "conv2_channels": 8, "hidden": 16})
    return net


def test_every_registered_attack_has_fast_parameters():
    assert set(FAST) == set(ATTACKS)


def check_contract(registry: AttackRegistry, model, name: str, norm: str | None, params: dict):
    """Attack ``name`` of ``registry`` keeps the contract on random inputs (FAST ``params``)."""
    spec = registry.spec(name)
    params = dict(params, seed=0)
    if norm is not None:
        params["norm"] = norm
        if "eps" in spec.parameters():  # a minimal-perturbation attack has no budget
            params["eps"] = EPS[norm]
    attack = registry.make(name, model, **params)
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


def check_targeted_contract(registry: AttackRegistry, model, name: str, params: dict):
    """A targeted attack ``name`` of ``registry`` reports its random targets and aims at them."""
    attack = registry.make(name, model, target_mode=TargetMode.RANDOM, seed=1, **params)
    x = torch.rand(6, 1, 28, 28)
    y = torch.arange(6) % 10
    result = attack(x, y)
    assert result.target.shape == (6,) and (result.target != y).all()
    assert torch.equal(result.success, result.pred == result.target)


@pytest.mark.parametrize(("name", "norm"), list(contract_cases(ATTACKS, list(ATTACKS))))
def test_attack_contract(model, name, norm):
    check_contract(ATTACKS, model, name, norm, FAST[name])


@pytest.mark.parametrize("name", [n for n in ATTACKS if ATTACKS.spec(n).cls.supports_targeted])
def test_targeted_contract(model, name):
    check_targeted_contract(ATTACKS, model, name, FAST[name])


@pytest.mark.parametrize("name", [n for n in ATTACKS if not ATTACKS.spec(n).cls.supports_targeted])
def test_untargeted_only_attacks_refuse_a_target(model, name):
    with pytest.raises(AttackParameterError, match="untargeted only"):
        ATTACKS.make(name, model, target_mode=TargetMode.RANDOM)


def test_unknown_attack_lists_the_known_ones(model):
    with pytest.raises(UnknownAttackError, match="available: fgsm"):
        ATTACKS.make("deepfool2", model)


def test_parameter_that_does_not_apply_is_named(model):
    with pytest.raises(AttackParameterError, match="does not take steps"):
        ATTACKS.make("fgsm", model, steps=10)


def test_none_parameters_keep_defaults(model):
    attack = ATTACKS.make("pgd", model, eps=None, steps=None)
    assert attack.eps == 0.3 and attack.steps == 40


def test_the_package_names_only_its_own_attacks():
    # The lab's attack on GGA is added above (gga_lab.attack_registry), never named here.
    assert all(spec.path.startswith("attacks.") for _, spec in ATTACKS.items())


def test_a_layer_above_adds_attacks_without_changing_this_registry():
    extra = AttackSpec("attacks.pgd:BIM", "BIM again, under another name")
    more = ATTACKS.with_attacks({"bim2": extra})
    assert list(more) == [*ATTACKS, "bim2"] and "bim2" not in ATTACKS
    assert more.spec("bim2") is extra and len(more) == len(ATTACKS) + 1
    with pytest.raises(ValueError, match=r"\['pgd'\] are registered already"):
        ATTACKS.with_attacks({"pgd": extra})
