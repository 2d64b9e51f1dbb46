"""The ``Attack`` base: eval mode, targets, success, in the shape of torchattacks' ``Attack``.

Subclasses implement ``forward(x, y, target) -> x_adv``; ``__call__`` checks the inputs, puts the
model in eval mode for the duration (restoring its training flag after), chooses targets and
measures success. Gradients are taken with ``torch.autograd.grad`` on the input only, so a model
shared with other users never sees its parameters' ``.grad`` written.
"""

import abc
import contextlib
import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.norms import NORMS, Norm
from models.errors import GGAUserError


class AttackParameterError(GGAUserError, ValueError):
    """An attack parameter is outside its valid range (eps, steps, step size, norm, loss)."""


class NotFittedError(GGAUserError, RuntimeError):
    """An attack that must be fitted (the universal perturbation) was used before ``fit``."""


class TargetMode(enum.Enum):
    """How a targeted attack picks the class each input should be pushed to."""

    GIVEN = "given"  # the caller passes ``target``
    RANDOM = "random"  # a uniformly random class other than the true one
    LEAST_LIKELY = "least-likely"  # the class the model finds least likely on the clean input


@dataclass
class AttackResult:
    """What an attack returns for a batch.

    Attributes:
        x_adv: adversarial inputs (B, C, H, W), pixels in [0, 1], detached.
        success: (B,) bool: prediction != y (untargeted) or prediction == target (targeted).
        target: (B,) int64 target classes, or ``None`` for an untargeted attack.
        pred: (B,) int64 predictions of the model on ``x_adv``.
    """

    x_adv: Tensor
    success: Tensor
    target: Tensor | None
    pred: Tensor


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore every submodule's training flag.

    Adversarial training calls attacks on a model in train mode; BatchNorm statistics and dropout
    must not change while the attack probes the model.
    """
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags.items():
            module.training = flag


def check_eps(eps: float, norm: Norm) -> float:
    """Validate a perturbation budget for ``norm`` in [0, 1] pixel space.

    Raises:
        AttackParameterError: ``eps`` is not positive and finite, or above 1 for l_inf (a pixel
            cannot move further than the whole range).
    """
    if norm not in NORMS:
        raise AttackParameterError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise AttackParameterError(f"eps must be a positive number, got {eps!r}")
    if norm == "linf" and eps > 1:
        raise AttackParameterError(
            f"eps {eps} is above 1, the whole pixel range; l_inf budgets for [0, 1] pixels "
            "are like 0.3 (MNIST) or 8/255 (CIFAR)"
        )
    return float(eps)


def check_positive(name: str, value: float, integer: bool = False) -> None:
    """Raise ``AttackParameterError`` unless ``value`` is a positive (integer) number."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise AttackParameterError(f"{name} must be {what}, got {value!r}")


class Attack(abc.ABC):
    """Base of every attack and corruption.

    Args:
        model: classifier taking pixels in [0, 1] and returning logits; used in eval mode.
        target_mode: ``None`` for an untargeted attack, else how targets are chosen.
        seed: seeds the attack's own random source (random starts, random targets, noise), so
            results do not depend on, or disturb, torch's global random state. ``None`` draws from
            the global generator.

    Subclasses set ``name`` and ``supports_targeted`` and implement ``forward``.
    """

    name: ClassVar[str] = "attack"
    supports_targeted: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        target_mode: TargetMode | None = None,
        seed: int | None = None,
    ) -> None:
        if target_mode is not None and not isinstance(target_mode, TargetMode):
            raise AttackParameterError(
                f"target_mode must be a TargetMode or None, got {target_mode!r}"
            )
        if target_mode is not None and not self.supports_targeted:
            raise AttackParameterError(f"{self.name} is untargeted only; leave the target unset")
        self.model = model
        self.target_mode = target_mode
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    @property
    def targeted(self) -> bool:
        return self.target_mode is not None

    def logits(self, x: Tensor) -> Tensor:
        """The one hook through which attacks reach the model (pixels in, logits out)."""
        return self.model(x)

    @abc.abstractmethod
    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Compute adversarial inputs; the model is already in eval mode.

        Args:
            x: clean inputs (B, C, H, W) in [0, 1], detached.
            y: (B,) true labels.
            target: (B,) target classes, or ``None`` when untargeted.

        Returns:
            Adversarial inputs (B, C, H, W) in [0, 1].
        """

    def __call__(self, x: Tensor, y: Tensor, target: Tensor | None = None) -> AttackResult:
        """Attack a batch.

        Args:
            x: clean inputs (B, C, H, W), float pixels in [0, 1].
            y: (B,) int64 true labels.
            target: (B,) target classes; implies ``TargetMode.GIVEN`` when given.

        Returns:
            The adversarial inputs, per-input success, the targets used and the predictions.

        Raises:
            ValueError: inputs are not a float batch in [0, 1] or labels do not match it.
            AttackParameterError: a targeted mode needs ``target`` and none was given.
        """
        x, y = self._check_inputs(x, y)
        with eval_mode(self.model):
            target = self.choose_target(x, y, target)
            x_adv = self.forward(x, y, target).detach().clamp(0.0, 1.0)
            with torch.no_grad():
                pred = self.logits(x_adv).argmax(dim=1)
        success = pred == target if target is not None else pred != y
        return AttackResult(x_adv=x_adv, success=success, target=target, pred=pred)

    def choose_target(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor | None:
        """Targets per ``target_mode`` (``None`` when untargeted and none was given)."""
        if target is not None:
            target = torch.as_tensor(target, dtype=torch.long, device=y.device).reshape(-1)
            if target.shape != y.shape:
                raise ValueError(f"target has shape {tuple(target.shape)}, labels {tuple(y.shape)}")
            if not self.supports_targeted:
                raise AttackParameterError(f"{self.name} is untargeted only; pass no target")
            return target
        if self.target_mode is None:
            return None
        if self.target_mode is TargetMode.GIVEN:
            raise AttackParameterError(
                "target mode 'given' needs target classes: pass target=... (CLI: --target L)"
            )
        with torch.no_grad():
            logits = self.logits(x)
        if self.target_mode is TargetMode.LEAST_LIKELY:
            return logits.argmin(dim=1)
        # RANDOM: an offset in 1..C-1 added to y modulo C is uniform over the other classes.
        num_classes = logits.shape[1]
        offset = torch.randint(1, num_classes, y.shape, generator=self.generator)
        return (y + offset.to(y.device)) % num_classes

    def input_gradient(self, loss: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
        """Gradient of a scalar ``loss`` with respect to the input ``x`` only."""
        (grad,) = torch.autograd.grad(loss, x, create_graph=create_graph)
        return grad

    def _check_inputs(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError("x must be a float tensor (B, C, H, W) of pixels in [0, 1]")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"pixels must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]: "
                "attacks work before normalisation, which the model does itself"
            )
        y = torch.as_tensor(y, dtype=torch.long, device=x.device).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
        return x.detach(), y


def classification_loss(logits: Tensor, labels: Tensor, loss: str) -> Tensor:
    """Per-batch summed loss, so each input's gradient does not depend on the batch size.

    Args:
        logits: (B, C).
        labels: (B,) classes the loss is measured against.
        loss: ``"ce"`` (cross-entropy) or ``"mse"`` (squared error between the softmax
            probabilities and the one-hot label: the paper's T-MSE adaptive attack).

    Returns:
        A scalar.
    """
    if loss == "ce":
        return F.cross_entropy(logits, labels, reduction="sum")
    if loss == "mse":
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
        return ((probs - onehot) ** 2).sum()
    raise AttackParameterError(f"unknown loss {loss!r}; use 'ce' or 'mse'")
