"""The box-constrained L-BFGS attack of Szegedy et al. (2014), "Intriguing properties".

For a target class l it approximates the smallest r with ``F(x + r) = l`` and ``x + r`` in
[0, 1]^d by minimising ``c |r|^2 + loss(x + r, l)`` with box-constrained L-BFGS
(``scipy.optimize.minimize(method="L-BFGS-B")``, bounds ``[-x, 1 - x]`` per pixel) and searching
over the penalty weight c.
"""

import logging

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, minimize
from torch import Tensor, nn

from attacks.base import Attack, AttackParameterError, TargetMode, check_positive

logger = logging.getLogger(__name__)


class LBFGS(Attack):
    """Szegedy et al.'s attack: L-BFGS-B on ``c |r|_2^2 + loss(x + r, l)`` and a search on c.

    Batching: the objective of a batch is the sum of the per-input objectives, each with its own
    c, optimised as one L-BFGS-B problem over all the inputs' perturbations. The sum is separable,
    so its minimiser is the per-input minimisers; one scipy call per search step keeps a few
    hundred MNIST inputs at a few seconds per hundred.

    The search on c: a larger c weighs the perturbation's size more and gives a smaller r, so the
    attack wants the largest c whose minimiser still reaches the target. (The paper's words are
    "the minimum c > 0 for which the minimizer r satisfies f(x + r) = l"; with its own objective,
    the smallest perturbation comes from the largest such c, which is what is searched here.)
    Starting from ``c_init``, c is multiplied by 10 after a success and divided by 10 after a
    failure until both a success and a failure are known, then bisected between them, per input.
    The smallest successful r over the search is returned; an input never reaching the target
    keeps the r of the smallest c tried.

    The penalty is the squared l_2 norm (smooth at r = 0, where L-BFGS starts); the loss is the
    cross-entropy to the target, or ``-log(1 - p_y)`` when untargeted (it pushes the true class's
    probability down and is bounded below, unlike ``-CE(x + r, y)``).

    Args:
        model: classifier on [0, 1] pixels.
        c_init: first penalty weight.
        search_steps: number of L-BFGS-B runs per batch (points of the search on c).
        max_iter: L-BFGS-B iterations per run.
        min_confidence: if set, reaching the target also needs its softmax probability (the
            most likely wrong class's when untargeted) to be at least this.
        target_mode: ``None`` (untargeted) or how targets are chosen.
        seed: seeds random target choice.

    Raises:
        AttackParameterError: a parameter is out of range.
    """

    name = "lbfgs"

    def __init__(
        self,
        model: nn.Module,
        c_init: float = 1.0,
        search_steps: int = 6,
        max_iter: int = 50,
        min_confidence: float | None = None,
        target_mode: TargetMode | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, target_mode=target_mode, seed=seed)
        check_positive("c_init", c_init)
        check_positive("search_steps", search_steps, integer=True)
        check_positive("max_iter", max_iter, integer=True)
        if min_confidence is not None and not 0 < min_confidence < 1:
            raise AttackParameterError(f"min_confidence must be in (0, 1), got {min_confidence}")
        self.c_init = float(c_init)
        self.search_steps = search_steps
        self.max_iter = max_iter
        self.min_confidence = min_confidence

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        batch = x.shape[0]
        c = torch.full((batch,), self.c_init, dtype=torch.float64)
        good = torch.zeros(batch, dtype=torch.float64)  # largest c known to reach the target
        bad = torch.full((batch,), float("inf"), dtype=torch.float64)  # smallest c known to fail
        best = torch.zeros_like(x)
        best_norm = torch.full((batch,), float("inf"))
        fallback = torch.zeros_like(x)
        fallback_c = torch.full((batch,), float("inf"), dtype=torch.float64)
        for _ in range(self.search_steps):
            r = self._minimise(x, y, target, c)
            with torch.no_grad():
                reached = self._reached(self.logits(x + r), y, target)
            norms = r.flatten(1).norm(dim=1)
            improved = reached & (norms < best_norm)
            best[improved] = r[improved]
            best_norm[improved] = norms[improved]
            smaller = c < fallback_c
            fallback[smaller] = r[smaller]
            fallback_c[smaller] = c[smaller]
            good = torch.where(reached, torch.maximum(good, c), good)
            bad = torch.where(reached, bad, torch.minimum(bad, c))
            bracketed = (good > 0) & torch.isfinite(bad)
            c = torch.where(bracketed, (good + bad) / 2, torch.where(reached, c * 10, c / 10))
        found = torch.isfinite(best_norm)
        logger.debug("L-BFGS reached the target on %d of %d inputs", int(found.sum()), batch)
        r = torch.where(found.view(-1, 1, 1, 1), best, fallback)
        return (x + r).clamp(0.0, 1.0)

    def _loss(self, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Per-input loss (B,) the attack descends."""
        if target is not None:
            return F.cross_entropy(logits, target, reduction="none")
        # -log(1 - p_y) = logsumexp(z) - logsumexp(z without y), computed stably.
        others = logits.scatter(1, y.view(-1, 1), float("-inf"))
        return logits.logsumexp(dim=1) - others.logsumexp(dim=1)

    def _reached(self, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        probs = logits.softmax(dim=1)
        pred = probs.argmax(dim=1)
        ok = pred == target if target is not None else pred != y
        if self.min_confidence is not None:
            ok &= probs.gather(1, pred.view(-1, 1)).squeeze(1) >= self.min_confidence
        return ok

    def _minimise(self, x: Tensor, y: Tensor, target: Tensor | None, c: Tensor) -> Tensor:
        """One L-BFGS-B run on the summed objective with per-input weights ``c``; returns r."""
        shape = x.shape
        x64 = x.detach().double().cpu().numpy().ravel()
        c_t = c.to(dtype=x.dtype, device=x.device)

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            r = torch.from_numpy(flat).to(dtype=x.dtype, device=x.device).view(shape)
            r.requires_grad_(True)
            per_input = c_t * r.flatten(1).pow(2).sum(dim=1) + self._loss(
                self.logits(x + r), y, target
            )
            total = per_input.sum()
            grad = self.input_gradient(total, r)
            return float(total.detach()), grad.detach().double().cpu().numpy().ravel()

        result = minimize(
            objective,
            np.zeros_like(x64),
            jac=True,
            method="L-BFGS-B",
            bounds=Bounds(-x64, 1.0 - x64),
            options={"maxiter": self.max_iter},
        )
        return torch.from_numpy(result.x).to(dtype=x.dtype, device=x.device).view(shape)
