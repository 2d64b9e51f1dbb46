"""Fast gradient sign method (Goodfellow et al. 2015), untargeted and targeted."""

from torch import Tensor, nn

from attacks.base import Attack, TargetMode, check_eps, classification_loss
from attacks.norms import Norm, steepest_step


class FGSM(Attack):
    """One step of size ``eps`` along the sign of the loss gradient.

    Untargeted: ``x' = x + eps * sign(grad_x CE(x, y))``; targeted:
    ``x' = x - eps * sign(grad_x CE(x, target))``; then clipped to [0, 1]. With ``norm="l2"`` the
    step is ``eps * g / |g|_2`` instead (the fast gradient method).

    Args:
        model: classifier on [0, 1] pixels.
        eps: step size, which is also the perturbation budget.
        norm: ``"linf"`` (FGSM proper) or ``"l2"``.
        target_mode: ``None`` (untargeted) or how targets are chosen.
        seed: seeds random target choice.

    Raises:
        AttackParameterError: ``eps`` or ``norm`` is invalid.
    """

    name = "fgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.3,
        norm: Norm = "linf",
        target_mode: TargetMode | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, target_mode=target_mode, seed=seed)
        self.eps = check_eps(eps, norm)
        self.norm = norm

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        x = x.clone().requires_grad_(True)
        logits = self.logits(x)
        if target is None:
            cost = classification_loss(logits, y, "ce")
        else:
            cost = -classification_loss(logits, target, "ce")  # targeted: descend toward target
        grad = self.input_gradient(cost, x)
        return (x.detach() + self.eps * steepest_step(grad, self.norm)).clamp(0.0, 1.0)
