"""The attacks of this package by name: what the CLI, the contract test and the lab look up.

Classes are imported on first use, so listing names stays cheap. Layers above add their own
attacks with ``ATTACKS.with_attacks`` (the lab adds its adaptive attack on GGA,
``gga_lab.attack_registry``); this package names none of theirs.
"""

import importlib
import inspect
from collections.abc import ItemsView, Iterator, Mapping
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


class AttackRegistry:
    """Attacks by name, each built from its spec with checked keyword parameters.

    Args:
        specs: the entries, in the order listings show them.

    Example:
        >>> attack = ATTACKS.make("pgd", model, eps=0.1, steps=20)
        >>> lab = ATTACKS.with_attacks({"csa": AttackSpec("gga_lab.csa:CSA", "...")})
    """

    def __init__(self, specs: Mapping[str, AttackSpec]) -> None:
        self._specs = dict(specs)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def items(self) -> ItemsView[str, AttackSpec]:
        return self._specs.items()

    def spec(self, name: str) -> AttackSpec:
        """The entry of ``name``.

        Raises:
            UnknownAttackError: no such attack; the message lists the known ones.
        """
        if name not in self._specs:
            raise UnknownAttackError(f"unknown attack {name!r}; available: {', '.join(self)}")
        return self._specs[name]

    def make(self, name: str, model: nn.Module, **params: Any) -> Attack:
        """Build attack ``name`` on ``model`` with keyword ``params``.

        Args:
            name: a registered name.
            model: classifier on [0, 1] pixels.
            **params: constructor arguments; ``None`` values are dropped (the attack's default
                holds).

        Returns:
            The attack.

        Raises:
            UnknownAttackError: ``name`` is not registered.
            AttackParameterError: a parameter does not apply to this attack or is out of range.
        """
        spec = self.spec(name)
        params = {k: v for k, v in params.items() if v is not None}
        if "target_mode" in params and not spec.cls.supports_targeted:
            raise AttackParameterError(
                f"attack {name!r} is untargeted only; leave the target unset"
            )
        accepted = spec.parameters()
        extra = sorted(set(params) - set(accepted))
        if extra:
            raise AttackParameterError(
                f"attack {name!r} does not take {', '.join(extra)}; it takes: {', '.join(accepted)}"
            )
        return spec.cls(model, **params)

    def with_attacks(self, specs: Mapping[str, AttackSpec]) -> "AttackRegistry":
        """This registry and ``specs`` after it: how a layer above adds attacks of its own.

        Raises:
            ValueError: a name in ``specs`` is registered already.
        """
        taken = sorted(set(specs) & set(self._specs))
        if taken:
            raise ValueError(f"attacks {taken} are registered already")
        return AttackRegistry({**self._specs, **specs})


ATTACKS = AttackRegistry(
    {
        "fgsm": AttackSpec("attacks.fgsm:FGSM", "fast gradient sign method (Goodfellow et al.)"),
        "bim": AttackSpec("attacks.pgd:BIM", "basic iterative method: PGD without random start"),
        "pgd": AttackSpec("attacks.pgd:PGD", "projected gradient descent (Madry et al.)"),
        "lbfgs": AttackSpec(
            "attacks.lbfgs:LBFGS",
            "box-constrained L-BFGS, smallest l_2 perturbation (Szegedy et al.)",
        ),
        "deepfool": AttackSpec(
            "attacks.deepfool:DeepFool",
            "DeepFool: the smallest step across the nearest boundary (Moosavi-Dezfooli et al.)",
            bounded=False,
        ),
        "universal": AttackSpec(
            "attacks.universal:UniversalPerturbation",
            "one universal perturbation for all inputs (Moosavi-Dezfooli et al.)",
            needs_fit=True,
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
)
