"""The attacks by name: what the CLI, the contract test and evaluation look up.

Classes are imported on first use, so listing names stays cheap and the cosine-similarity
attack's dependency on the detector's CSM is only loaded when that attack is asked for.
"""

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from torch import nn

from attacks.base import Attack, AttackParameterError
from models.errors import GGAUserError


class UnknownAttackError(GGAUserError, LookupError):
    """No attack of that name in the registry."""


@dataclass(frozen=True)
class AttackSpec:
    """One registry entry.

    Attributes:
        path: ``"module:Class"`` of the attack.
        summary: one line for ``--help`` and the docs.
        bounded: the perturbation stays inside an eps ball (rotations do not).
        needs_fit: the attack must be fitted on inputs first (``fit(x)``).
    """

    path: str
    summary: str
    bounded: bool = True
    needs_fit: bool = False

    @property
    def cls(self) -> type[Attack]:
        module, name = self.path.split(":")
        return getattr(importlib.import_module(module), name)

    def parameters(self) -> list[str]:
        """Keyword parameters the attack's constructor takes (besides the model)."""
        params = inspect.signature(self.cls.__init__).parameters
        return [p for p in params if p not in ("self", "model")]


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec("attacks.fgsm:FGSM", "fast gradient sign method (Goodfellow et al.)"),
    "bim": AttackSpec("attacks.pgd:BIM", "basic iterative method: PGD without random start"),
    "pgd": AttackSpec("attacks.pgd:PGD", "projected gradient descent (Madry et al.)"),
    "lbfgs": AttackSpec(
        "attacks.lbfgs:LBFGS", "box-constrained L-BFGS, smallest l_2 perturbation (Szegedy et al.)"
    ),
    "universal": AttackSpec(
        "attacks.universal:UniversalPerturbation",
        "one universal perturbation for all inputs (Moosavi-Dezfooli et al.)",
        needs_fit=True,
    ),
    "csa": AttackSpec(
        "gga_lab.csa:CSA", "cosine-similarity attack on GGA (PGD through the CSM, Softplus)"
    ),
    "noise": AttackSpec("attacks.corruptions:UniformNoise", "uniform noise in the eps ball"),
    "rotation": AttackSpec(
        "attacks.corruptions:Rotation", "random rotations up to max_degrees", bounded=False
    ),
    "corruption": AttackSpec(
        "attacks.corruptions:Corruption",
        "a common corruption (noise, blur, contrast, JPEG, ...) at severity 1-5",
        bounded=False,
    ),
}


def attack_spec(name: str) -> AttackSpec:
    """The registry entry of ``name``.

    Raises:
        UnknownAttackError: no such attack; the message lists the known ones.
    """
    if name not in ATTACKS:
        raise UnknownAttackError(f"unknown attack {name!r}; available: {', '.join(ATTACKS)}")
    return ATTACKS[name]


def make_attack(name: str, model: nn.Module, **params: Any) -> Attack:
    """Build attack ``name`` on ``model`` with keyword ``params``.

    Args:
        name: a key of ``ATTACKS``.
        model: classifier on [0, 1] pixels.
        **params: constructor arguments; ``None`` values are dropped (the attack's default holds).

    Returns:
        The attack.

    Raises:
        UnknownAttackError: ``name`` is not registered.
        AttackParameterError: a parameter does not apply to this attack or is out of range.
    """
    spec = attack_spec(name)
    params = {k: v for k, v in params.items() if v is not None}
    if "target_mode" in params and not spec.cls.supports_targeted:
        raise AttackParameterError(f"attack {name!r} is untargeted only; leave the target unset")
    accepted = spec.parameters()
    extra = sorted(set(params) - set(accepted))
    if extra:
        raise AttackParameterError(
            f"attack {name!r} does not take {', '.join(extra)}; it takes: {', '.join(accepted)}"
        )
    return spec.cls(model, **params)
