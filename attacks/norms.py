"""Perturbation norms and projections onto norm balls, per input of a batch."""

from typing import Literal

import torch
from torch import Tensor

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")

# Guards divisions by a zero gradient or perturbation norm; far below any useful pixel change.
_TINY = 1e-12


def _per_input(x: Tensor) -> Tensor:
    """View ``x`` (B, ...) as (B, D)."""
    return x.reshape(x.shape[0], -1)


def perturbation_norm(delta: Tensor, norm: Norm) -> Tensor:
    """Norm of each input's perturbation.

    Args:
        delta: perturbations (B, C, H, W).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        (B,) norms.
    """
    flat = _per_input(delta)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def project(delta: Tensor, eps: float | Tensor, norm: Norm) -> Tensor:
    """Project each input's perturbation onto the ``norm`` ball of radius ``eps``.

    Args:
        delta: perturbations (B, C, H, W).
        eps: ball radius; for l_2 also a (B,) tensor, one radius per input.
        norm: ``"linf"`` (clip each pixel) or ``"l2"`` (rescale if outside).

    Returns:
        The projected perturbations, same shape.
    """
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        norms = perturbation_norm(delta, "l2").clamp_min(_TINY)
        factor = (eps / norms).clamp(max=1.0)
        return delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def steepest_step(grad: Tensor, norm: Norm) -> Tensor:
    """The unit-norm step that increases a loss fastest to first order.

    ``sign(grad)`` for l_inf (FGSM's step), ``grad / |grad|_2`` for l_2.

    Args:
        grad: loss gradients (B, C, H, W).
        norm: the norm the step is measured in.

    Returns:
        Steps of norm 1 (0 where the gradient is 0), same shape.
    """
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        norms = perturbation_norm(grad, "l2").clamp_min(_TINY)
        return grad / norms.view(-1, *([1] * (grad.dim() - 1)))
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def random_in_ball(
    like: Tensor, eps: float, norm: Norm, generator: torch.Generator | None = None
) -> Tensor:
    """Uniformly random perturbations inside the ``norm`` ball of radius ``eps``.

    l_inf: each pixel uniform in [-eps, eps]. l_2: uniform in the ball's volume (a Gaussian
    direction, radius ``eps * u ** (1 / D)``), so high-dimensional samples sit near the sphere.

    Args:
        like: a tensor whose shape, dtype and device the result takes (B, C, H, W).
        eps: ball radius.
        norm: ``"linf"`` or ``"l2"``.
        generator: random source (CPU); ``None`` uses torch's global one.

    Returns:
        Perturbations shaped like ``like``.
    """
    if norm == "linf":
        u = torch.rand(like.shape, generator=generator, dtype=like.dtype)
        return ((2 * u - 1) * eps).to(like.device)
    if norm == "l2":
        direction = torch.randn(like.shape, generator=generator, dtype=like.dtype)
        direction = steepest_step(direction, "l2")
        dim = direction[0].numel()
        radius = torch.rand(like.shape[0], generator=generator, dtype=like.dtype) ** (1.0 / dim)
        delta = direction * (eps * radius).view(-1, *([1] * (like.dim() - 1)))
        return delta.to(like.device)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
