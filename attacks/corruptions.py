"""Non-adversarial corruptions of the paper's evaluation: uniform noise and rotations.

They share the ``Attack`` interface so the CLI and evaluation treat them alike; they use no
gradients and are untargeted. Success is still "the prediction differs from the label".
"""

import torch
from torch import Tensor, nn

from attacks.base import Attack, AttackParameterError, check_eps
from attacks.norms import Norm, random_in_ball
from models.data.transforms import rotate


class UniformNoise(Attack):
    """``x + u``, u uniform in the ``norm`` ball of radius ``eps``, clipped to [0, 1].

    Args:
        model: classifier (only used to measure success).
        eps: noise radius.
        norm: ``"linf"`` (each pixel uniform in [-eps, eps]) or ``"l2"`` (uniform in the ball).
        seed: seeds the noise.

    Raises:
        AttackParameterError: ``eps`` or ``norm`` is invalid.
    """

    name = "noise"
    supports_targeted = False

    def __init__(
        self, model: nn.Module, eps: float = 0.3, norm: Norm = "linf", seed: int | None = None
    ) -> None:
        super().__init__(model, target_mode=None, seed=seed)
        self.eps = check_eps(eps, norm)
        self.norm = norm

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        return (x + random_in_ball(x, self.eps, self.norm, self.generator)).clamp(0.0, 1.0)


class Rotation(Attack):
    """Rotate each input by an angle drawn uniformly from [-max_degrees, max_degrees].

    Zero fill outside the original image (``models.data.transforms.rotate``).

    Args:
        model: classifier (only used to measure success).
        max_degrees: largest absolute angle, at most 180 (the paper: 45).
        seed: seeds the angles.

    Raises:
        AttackParameterError: ``max_degrees`` is outside (0, 180].
    """

    name = "rotation"
    supports_targeted = False

    def __init__(
        self, model: nn.Module, max_degrees: float = 45.0, seed: int | None = None
    ) -> None:
        super().__init__(model, target_mode=None, seed=seed)
        if not 0 < max_degrees <= 180:
            raise AttackParameterError(f"max_degrees must be in (0, 180], got {max_degrees}")
        self.max_degrees = float(max_degrees)
        self.last_angles: Tensor | None = None  # (B,) degrees of the last batch

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        u = torch.rand(x.shape[0], generator=self.generator)
        angles = (2 * u - 1) * self.max_degrees
        self.last_angles = angles
        return rotate(x, angles.to(x.device)).clamp(0.0, 1.0)
