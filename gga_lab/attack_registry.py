"""The lab's attacks by name, and the kinds of untrusted input made with them.

``LAB_ATTACKS`` is the attack package's registry plus the adaptive attack on GGA (``csa``), which
needs the detector's CSM and so cannot be named below the lab. Everything that builds an attack
by name goes through it: the evaluation's kinds (``gga_lab.evaluate``), the untrusted inputs the
fit learns from (``gga_lab.untrusted``) and ``gga attack``.
"""

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import Tensor, nn
from tqdm import tqdm

from attacks.base import Attack
from attacks.evaluate import run_attack
from attacks.registry import ATTACKS, AttackRegistry, AttackSpec

LAB_ATTACKS: AttackRegistry = ATTACKS.with_attacks(
    {
        "csa": AttackSpec(
            "gga_lab.csa:CSA", "cosine-similarity attack on GGA (PGD through the CSM, Softplus)"
        ),
    }
)
# Which of an attack's outputs a kind keeps: its successes (adversarial inputs), all of them
# (noise, which is the corruption itself), or its failures (corrupted inputs still classified
# correctly: a shift of the data, not a misclassification).
KEEP: tuple[str, ...] = ("successes", "all", "failures")


@dataclass(frozen=True)
class AttackKind:
    """A kind of untrusted input: a registered attack, its parameters, and what is kept.

    Attributes:
        attack: a name in ``LAB_ATTACKS``.
        params: the attack's keyword parameters (``LAB_ATTACKS.make``).
        keep: one of ``KEEP``.
    """

    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    keep: str = "successes"

    def __post_init__(self) -> None:
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {', '.join(KEEP)}, got {self.keep!r}")

    def make(self, model: nn.Module) -> Attack:
        """The attack on ``model``."""
        return LAB_ATTACKS.make(self.attack, model, **self.params)

    def run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        desc: str,
        progress: bool = True,
    ) -> tuple[Tensor, int]:
        """The kind's inputs made from ``x`` (labels ``y``), batch by batch.

        Returns:
            ``(inputs (M, C, H, W), how many of the N attempts succeeded)``.
        """
        if len(x) == 0:
            return x[:0], 0
        bar = partial(tqdm, desc=desc, unit="batch", disable=not progress, leave=False)
        run = run_attack(self.make(model), x, y, batch_size=batch_size, progress=bar)
        hits = int(run.success.sum())
        if self.keep == "all":
            return run.x_adv, hits
        return run.x_adv[run.success if self.keep == "successes" else ~run.success], hits
