"""Projected gradient descent (Madry et al. 2018) and the basic iterative method (Kurakin et al.).

BIM is PGD without the random start. Both take l_inf or l_2 steps and a cross-entropy or MSE loss;
targeted PGD with either loss gives the paper's T-SCE and T-MSE adaptive attacks.
"""

from torch import Tensor, nn

from attacks.base import (
    Attack,
    AttackParameterError,
    TargetMode,
    check_eps,
    check_positive,
    classification_loss,
)
from attacks.norms import Norm, project, random_in_ball, steepest_step

LOSSES: tuple[str, ...] = ("ce", "mse")


class PGD(Attack):
    """Iterated steepest-ascent steps, each projected into the eps ball and [0, 1].

    Each step moves ``step_size`` along ``sign(grad)`` (l_inf) or ``grad / |grad|_2`` (l_2) of the
    loss (away from ``y``, or toward the target when targeted), then projects the perturbation
    back onto the ball of radius ``eps`` and the pixels onto [0, 1]. The final iterate is returned,
    or, with ``early_stop``, the first iterate that succeeds: such an input stays just past the
    decision boundary instead of being driven deep into the adversarial class.

    Args:
        model: classifier on [0, 1] pixels.
        eps: perturbation budget (l_inf: at most 1).
        step_size: step per iteration; ``None`` means ``eps / 4`` (the GGA paper's choice).
        steps: number of iterations.
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniformly random point of the ball (PGD) or from ``x`` (BIM).
        loss: ``"ce"`` cross-entropy on logits, or ``"mse"`` on softmax probabilities.
        target_mode: ``None`` (untargeted) or how targets are chosen.
        seed: seeds the random start and random targets.
        early_stop: freeze each input at its first successful iterate.

    Raises:
        AttackParameterError: a parameter is out of range or names an unknown norm or loss.
    """

    name = "pgd"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.3,
        step_size: float | None = None,
        steps: int = 40,
        norm: Norm = "linf",
        random_start: bool = True,
        loss: str = "ce",
        target_mode: TargetMode | None = None,
        seed: int | None = None,
        early_stop: bool = False,
    ) -> None:
        super().__init__(model, target_mode=target_mode, seed=seed)
        self.early_stop = early_stop
        self.eps = check_eps(eps, norm)
        self.norm = norm
        self.step_size = self.eps / 4 if step_size is None else step_size
        check_positive("step_size", self.step_size)
        check_positive("steps", steps, integer=True)
        if loss not in LOSSES:
            raise AttackParameterError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
        self.steps = steps
        self.random_start = random_start
        self.loss = loss

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        x_adv = x.clone()
        if self.random_start:
            delta = random_in_ball(x, self.eps, self.norm, self.generator)
            x_adv = (x + delta).clamp(0.0, 1.0)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            logits = self.logits(x_adv)
            if target is None:
                cost = classification_loss(logits, y, self.loss)
            else:
                cost = -classification_loss(logits, target, self.loss)
            grad = self.input_gradient(cost, x_adv)
            step = self.step_size * steepest_step(grad, self.norm)
            if self.early_stop:
                pred = logits.detach().argmax(dim=1)
                done = pred != y if target is None else pred == target
                if bool(done.all()):
                    return x_adv.detach()
                step = step * (~done).view(-1, *([1] * (x.dim() - 1)))
            x_adv = x_adv.detach() + step
            delta = project(x_adv - x, self.eps, self.norm)
            x_adv = (x + delta).clamp(0.0, 1.0)
        return x_adv


class BIM(PGD):
    """The basic iterative method: PGD started from the clean input (no random start).

    Takes the same arguments as ``PGD`` except ``random_start``.
    """

    name = "bim"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.3,
        step_size: float | None = None,
        steps: int = 40,
        norm: Norm = "linf",
        loss: str = "ce",
        target_mode: TargetMode | None = None,
        seed: int | None = None,
        early_stop: bool = False,
    ) -> None:
        super().__init__(
            model,
            eps=eps,
            step_size=step_size,
            steps=steps,
            norm=norm,
            random_start=False,
            loss=loss,
            target_mode=target_mode,
            seed=seed,
            early_stop=early_stop,
        )
