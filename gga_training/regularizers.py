"""Training losses beyond cross-entropy: virtual adversarial training and distillation.

Functional, so the training loop reads top to bottom and the tests can check each loss on
hand-computable cases.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _unit(d: torch.Tensor) -> torch.Tensor:
    """Scale each sample of ``d`` to unit l2 norm."""
    norms = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    return d / norms.view(-1, *([1] * (d.dim() - 1)))


def kl_from_logits(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(softmax(p) || softmax(q))``, shape (B,)."""
    p_log = F.log_softmax(p_logits, dim=1)
    q_log = F.log_softmax(q_logits, dim=1)
    return (p_log.exp() * (p_log - q_log)).sum(dim=1)


def virtual_adversarial_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    logits: torch.Tensor,
    eps: float,
    xi: float = 1e-6,
    power_iterations: int = 1,
) -> torch.Tensor:
    """The perturbation r (l2 norm ``eps`` per sample) that most increases ``KL(p(x) || p(x + r))``.

    Power iteration with finite differences (Miyato et al.): start from a random unit ``d``, take
    ``g = grad_d KL(p(x) || p(x + xi d))`` and set ``d = g / |g|``. No labels are needed.

    Args:
        model: the classifier, mode as the caller set it.
        x: inputs (B, ...).
        logits: ``model(x)``; detached here, since p(x) is the fixed reference distribution.
        eps: l2 radius of the returned perturbation.
        xi: finite-difference step.
        power_iterations: number of power-iteration steps.

    Returns:
        r_vadv, same shape as ``x``, without a graph.
    """
    reference = logits.detach()
    d = _unit(torch.randn_like(x))
    for _ in range(power_iterations):
        d = d.requires_grad_(True)
        divergence = kl_from_logits(reference, model(x + xi * d)).sum()
        (g,) = torch.autograd.grad(divergence, d)  # input-only: parameters' .grad untouched
        d = _unit(g.detach())
    return eps * d


def vat_loss(
    model: nn.Module,
    x: torch.Tensor,
    logits: torch.Tensor,
    eps: float,
    xi: float = 1e-6,
    power_iterations: int = 1,
) -> torch.Tensor:
    """Mean ``KL(p(x) || p(x + r_vadv))`` over the batch, differentiable in the parameters."""
    r = virtual_adversarial_perturbation(model, x, logits, eps, xi, power_iterations)
    return kl_from_logits(logits.detach(), model(x + r)).mean()


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    weight: float,
) -> torch.Tensor:
    """Hinton et al.: ``weight * T^2 * KL(teacher_T || student_T) + (1 - weight) * CE(labels)``.

    The ``T^2`` keeps the soft-target gradients on the scale of the hard-label ones as T changes.
    """
    soft = kl_from_logits(teacher_logits / temperature, student_logits / temperature).mean()
    hard = F.cross_entropy(student_logits, labels)
    return weight * temperature**2 * soft + (1.0 - weight) * hard
