"""What the detector must catch: adversarial attacks and corruptions, in [0, 1] pixel space.

Import attacks from their modules (``from attacks.pgd import PGD``) or build them by name with
``attacks.registry.ATTACKS.make``. Attacks see only a model and tensors: the adaptive attack on
GGA's CSM (``gga_lab.csa``) needs the detector and so lives in the lab, above both.
"""

from attacks.base import (
    Attack,
    AttackParameterError,
    AttackResult,
    NotFittedError,
    TargetMode,
    eval_mode,
)
from attacks.fgsm import FGSM
from attacks.lbfgs import LBFGS
from attacks.pgd import BIM, PGD
from attacks.registry import ATTACKS, AttackRegistry, AttackSpec, UnknownAttackError
from attacks.universal import UniversalPerturbation

__all__ = [
    "ATTACKS",
    "BIM",
    "FGSM",
    "LBFGS",
    "PGD",
    "Attack",
    "AttackParameterError",
    "AttackRegistry",
    "AttackResult",
    "AttackSpec",
    "NotFittedError",
    "TargetMode",
    "UniversalPerturbation",
    "UnknownAttackError",
    "eval_mode",
]
