"""Universal adversarial perturbation (Moosavi-Dezfooli et al. 2017): one r fooling most inputs."""

import logging

import torch
from torch import Tensor, nn

from attacks.base import (
    Attack,
    AttackParameterError,
    NotFittedError,
    check_eps,
    check_positive,
    eval_mode,
)
from attacks.deepfool import deepfool_perturbation
from attacks.norms import Norm, project

logger = logging.getLogger(__name__)


class UniversalPerturbation(Attack):
    """One input-independent perturbation, fitted on a set of inputs, applied to any input.

    ``fit`` runs the algorithm of the paper: passes over the (shuffled) inputs; for each input the
    current perturbation v does not fool (prediction of ``x + v`` equals that of ``x``), add the
    DeepFool step that moves ``x + v`` across the nearest boundary, then project v onto the
    ``norm`` ball of radius ``eps``. Stops when the fooling rate on the fitting inputs reaches
    ``target_fooling_rate`` or after ``max_passes``, and keeps the v of the pass with the highest
    fooling rate (projection can make a later pass worse). Fooling is measured against the
    model's own predictions, as in the paper; ``__call__``'s success is against the true labels.

    Args:
        model: classifier on [0, 1] pixels.
        eps: radius of the ball the perturbation is projected on.
        norm: ``"linf"`` or ``"l2"``.
        target_fooling_rate: stop once this fraction of fitting inputs is fooled (paper: 1 - delta).
        max_passes: most passes over the fitting inputs.
        overshoot: DeepFool's overshoot.
        deepfool_steps: DeepFool iterations per input.
        seed: seeds the order of the inputs in each pass.

    Raises:
        AttackParameterError: a parameter is out of range.
    """

    name = "universal"
    supports_targeted = False

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.3,
        norm: Norm = "linf",
        target_fooling_rate: float = 0.8,
        max_passes: int = 5,
        overshoot: float = 0.02,
        deepfool_steps: int = 10,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, target_mode=None, seed=seed)
        self.eps = check_eps(eps, norm)
        self.norm = norm
        if not 0 < target_fooling_rate <= 1:
            raise AttackParameterError(
                f"target_fooling_rate must be in (0, 1], got {target_fooling_rate}"
            )
        check_positive("max_passes", max_passes, integer=True)
        check_positive("deepfool_steps", deepfool_steps, integer=True)
        self.target_fooling_rate = target_fooling_rate
        self.max_passes = max_passes
        self.overshoot = overshoot
        self.deepfool_steps = deepfool_steps
        self.perturbation: Tensor | None = None  # (1, C, H, W) once fitted
        self.fooling_rate: float | None = None  # on the fitting inputs, after fit

    def fit(self, x: Tensor, batch_size: int = 256) -> "UniversalPerturbation":
        """Grow the universal perturbation on inputs ``x`` (B, C, H, W) in [0, 1].

        Args:
            x: fitting inputs; their labels are not needed.
            batch_size: batch size for measuring the fooling rate.

        Returns:
            ``self``, with ``perturbation`` and ``fooling_rate`` set.
        """
        x, _ = self._check_inputs(x, torch.zeros(len(x), dtype=torch.long))
        with eval_mode(self.model), torch.no_grad():
            clean = self._predict(x, batch_size)
        v = torch.zeros_like(x[:1])
        # Projection can undo progress, so a later pass may fool fewer inputs: keep the best v.
        best, best_rate = v.clone(), 0.0
        with eval_mode(self.model):
            for n_pass in range(self.max_passes):
                order = torch.randperm(len(x), generator=self.generator)
                for i in order.tolist():
                    xi = x[i : i + 1]
                    with torch.no_grad():
                        fooled = int(self.logits((xi + v).clamp(0, 1)).argmax()) != int(clean[i])
                    if fooled:
                        continue
                    dr = deepfool_perturbation(
                        self.logits,
                        (xi + v).clamp(0.0, 1.0),
                        clean[i : i + 1],
                        self.deepfool_steps,
                        self.overshoot,
                    )
                    v = project(v + dr, self.eps, self.norm)
                with torch.no_grad():
                    rate = float(
                        (self._predict((x + v).clamp(0, 1), batch_size) != clean).float().mean()
                    )
                logger.info("universal perturbation: pass %d, fooling rate %.3f", n_pass + 1, rate)
                if rate > best_rate:
                    best, best_rate = v.detach().clone(), rate
                if rate >= self.target_fooling_rate:
                    break
        self.perturbation = best
        self.fooling_rate = best_rate
        return self

    def perturb(self, x: Tensor) -> Tensor:
        """``x + v`` clipped to [0, 1], the same v for every input.

        Raises:
            NotFittedError: ``fit`` was not called.
        """
        if self.perturbation is None:
            raise NotFittedError("the universal perturbation is not fitted: call fit(x) first")
        if x.shape[1:] != self.perturbation.shape[1:]:
            raise ValueError(
                f"inputs of shape {tuple(x.shape[1:])} but the perturbation was fitted on "
                f"{tuple(self.perturbation.shape[1:])}"
            )
        return (x + self.perturbation.to(x.device)).clamp(0.0, 1.0)

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        return self.perturb(x)

    def _predict(self, x: Tensor, batch_size: int) -> Tensor:
        return torch.cat(
            [self.logits(x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)]
        )
