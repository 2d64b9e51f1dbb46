"""DeepFool (Moosavi-Dezfooli et al. 2016): the smallest step across the nearest decision boundary.

At each step the classifier is linearised around the current point: for every candidate class k
the boundary with the current label l is the hyperplane ``f_k - f_l = 0``, at distance
``|f_k - f_l| / ||w_k||_*`` (``w_k = grad(f_k - f_l)``, ``||.||_*`` the dual norm). The step goes
to the nearest of these planes; the search stops, per input, as soon as the label changes, and
the accumulated perturbation is scaled by ``1 + overshoot`` to land just past the boundary.

The inputs it makes are the minimal-perturbation family that a max softmax catches for free
(barely confident by construction) and a detector must not lose; ``gga fit`` makes them from
training images. Untargeted only. ``deepfool_perturbation`` is the functional core, which the
universal perturbation (``attacks.universal``) runs on one input at a time.
"""

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from attacks.base import Attack, AttackParameterError, check_positive
from attacks.norms import NORMS, Norm

# Keeps the step finite where a gradient difference vanishes (a flat region of the logits).
_TINY = 1e-12


def deepfool_perturbation(
    logits_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    labels: Tensor,
    steps: int,
    overshoot: float = 0.02,
    norm: Norm = "l2",
    candidates: int | None = None,
) -> Tensor:
    """DeepFool's perturbation moving each input of ``x`` off its label.

    Args:
        logits_fn: pixels (B, C, H, W) -> logits (B, K), the model in eval mode.
        x: inputs (B, C, H, W) in [0, 1].
        labels: (B,) the classes to move away from (an input already elsewhere gets zero).
        steps: most linearisation steps.
        overshoot: the accumulated step is scaled by ``1 + overshoot``.
        norm: ``"l2"`` or ``"linf"``.
        candidates: how many of the most likely other classes (on ``x``) are tried; all when None.

    Returns:
        ``(1 + overshoot) * r`` (B, C, H, W), not clipped: ``x`` plus it, clipped to [0, 1], is
        the adversarial input.
    """
    with torch.no_grad():
        start = logits_fn(x)
    k = start.shape[1] - 1 if candidates is None else min(candidates, start.shape[1] - 1)
    # The candidate classes: the k most likely others on the clean input, (B, k).
    others = start.scatter(1, labels[:, None], float("-inf")).topk(k, dim=1).indices
    r_total = torch.zeros_like(x)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps):
        idx = active.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        x_adv = (x[idx] + (1 + overshoot) * r_total[idx]).clamp(0.0, 1.0)
        step, fooled = _step(logits_fn, x_adv, labels[idx], others[idx], norm)
        r_total[idx] = r_total[idx] + step * (~fooled).view(-1, 1, 1, 1)
        active[idx[fooled]] = False
    return (1 + overshoot) * r_total


def _step(
    logits_fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, others: Tensor, norm: Norm
) -> tuple[Tensor, Tensor]:
    """One linearised step for inputs still on their label: (step, already fooled)."""
    x = x.detach().requires_grad_(True)
    logits = logits_fn(x)
    fooled = logits.argmax(dim=1) != y
    own = logits.gather(1, y[:, None])  # (B, 1)
    gaps = logits.gather(1, others) - own  # f_k - f_l, (B, k): negative while not fooled
    grads = torch.stack(
        [
            torch.autograd.grad(gaps[:, j].sum(), x, retain_graph=j < gaps.shape[1] - 1)[0]
            for j in range(gaps.shape[1])
        ],
        dim=1,
    )  # w_k, (B, k, C, H, W)
    flat = grads.flatten(2)
    dual = flat.norm(dim=2) if norm == "l2" else flat.abs().sum(dim=2)  # (B, k)
    distance = gaps.detach().abs() / (dual + _TINY)
    nearest = distance.argmin(dim=1)  # (B,)
    pick = torch.arange(len(x), device=x.device)
    w = grads[pick, nearest]  # (B, C, H, W)
    d = distance[pick, nearest].view(-1, 1, 1, 1) + 1e-4  # a hair past the plane
    if norm == "l2":
        step = d * w / (w.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + _TINY)
    else:
        step = d * w.sign()
    return step.detach(), fooled.detach()


class DeepFool(Attack):
    """DeepFool in l_2 or l_inf.

    Args:
        model: classifier on [0, 1] pixels.
        norm: ``"l2"`` (the paper's) or ``"linf"``.
        steps: most linearisation steps per input.
        overshoot: the perturbation is scaled by ``1 + overshoot`` at each step, so that the
            point lands past the boundary rather than on it (the paper's 0.02).
        candidates: how many of the most likely other classes are tried as the nearest boundary
            (the paper's 10; all classes when the model has fewer).
    """

    name: ClassVar[str] = "deepfool"
    supports_targeted: ClassVar[bool] = False

    def __init__(
        self,
        model: torch.nn.Module,
        norm: Norm = "l2",
        steps: int = 50,
        overshoot: float = 0.02,
        candidates: int = 10,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, None, seed)
        if norm not in NORMS:
            raise AttackParameterError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
        check_positive("steps", steps, integer=True)
        check_positive("candidates", candidates, integer=True)
        if not overshoot >= 0:
            raise AttackParameterError(f"overshoot must be >= 0, got {overshoot!r}")
        self.norm = norm
        self.steps = steps
        self.overshoot = float(overshoot)
        self.candidates = candidates

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        r = deepfool_perturbation(
            self.logits, x, y, self.steps, self.overshoot, self.norm, self.candidates
        )
        return (x + r).clamp(0.0, 1.0)
