"""The honest number: an adaptive attack on the shipped trust score, beside the plain one.

An attack on a model that ships a trust score succeeds when the label is wrong **and** the trust
score stays at or above alpha (the input is not flagged). ``AdaptiveTrustPGD`` knows the fitted
scorer and the model. It is l_inf PGD (steps of ``eps / 4`` along the sign, from a random start
in the ball, as ``attacks.pgd.PGD``) ascending

    CE(F(x'), y) - lam * evidence(x'),      evidence = sum_v s_v(x') / scale_v

where ``s_v`` is a torch surrogate of fused view v's raw outlier score and ``scale_v`` the
spread of its clean calibration scores (``gga_lab.trust_surrogate``): it pushes the label away
from y while it pulls every view it can differentiate back toward clean. Each term's input
gradient is divided by its l_1 norm per input, so ``lam`` weighs directions whatever the terms'
units, and the weight depends on where the input is: ``lam_before`` (default 0: plain PGD) while
the label is still right, ``lam`` (default 1) once it is wrong.

Why not one weight throughout: the evidence pulls toward the clean class, so any weight that
matters holds the label back. Ascending the unnormalised sum (lam 0.1 or 1) left only 3% of 32
inputs of ``mnist-lenet-low`` misclassified (its shipped scorer, eps 0.3, 20 steps), where the
plain PGD reaches 100%. And why keep the cross-entropy once the label is wrong: a view whose
score has no useful slope (feature squeezing's 1-bit rounding, under an eps below 0.5) can still
dominate the evidence, and the confidence further into the wrong class is what raises the
other views' p-values (msp, energy): on the tests' LeNet with a Fisher fusion of the eight
views (32 inputs, eps 0.15, 20 steps), descending the evidence alone after the label flipped
fooled the trust score less often than the plain PGD (56% against 66%), and with the
cross-entropy beside it more often (69%). On ``mnist-lenet-low`` both reach 92%.

A fused view with no surrogate (a view added later without one) is not in the
gradient; the report names it. The surrogates are not the trust score itself, so every
``check_every`` steps (and after the last) the batch goes through the **real** pipeline
(``GGAPipeline.scored``), and each input keeps the best iterate so far: a misclassified one with
the highest real trust, or, while none is misclassified, the latest.

``attack_trust`` runs it and the plain attack (``pgd``, same budget, steps and seed) on the same
inputs, rescoring both outputs with the pipeline, and returns an ``AdaptiveReport``.
"""

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import Attack, AttackParameterError, check_eps, check_positive
from attacks.evaluate import run_attack
from attacks.norms import project, random_in_ball, steepest_step
from attacks.registry import ATTACKS
from detectors.pipeline import GGAPipeline
from gga_lab.trust_surrogate import TrustSurrogate

logger = logging.getLogger(__name__)

DEFAULT_LAM = 1.0
DEFAULT_LAM_BEFORE = 0.0
DEFAULT_CHECK_EVERY = 5
# Real trust lies in [0, 1]: adding 2 ranks every misclassified iterate above every other.
_HIT_BONUS = 2.0


@dataclass(frozen=True)
class TrustOutcome:
    """What the served pipeline says about attacked inputs.

    Attributes:
        pred: (N,) int64 predicted labels.
        trust: (N,) float64 trust scores.
        success: (N,) bool: label wrong and trust >= alpha.
    """

    pred: np.ndarray
    trust: np.ndarray
    success: np.ndarray


def trust_outcome(pipeline: GGAPipeline, x: Tensor, y: Tensor, batch_size: int) -> TrustOutcome:
    """Score ``x`` with the real pipeline and say which inputs fool it.

    Args:
        pipeline: the served pipeline (with its scorer).
        x: inputs (N, C, H, W) in [0, 1].
        y: (N,) true labels.
        batch_size: inputs per pipeline call.

    Returns:
        The ``TrustOutcome``: success is a wrong label with trust at or above the scorer's alpha.
    """
    pred, trust = [], []
    for i in range(0, len(x), batch_size):
        scored = pipeline.scored(x[i : i + batch_size])
        pred.append(scored.inputs.predicted)
        trust.append(scored.result.trust)
    pred_all = np.concatenate(pred) if pred else np.empty(0, np.int64)
    trust_all = np.concatenate(trust) if trust else np.empty(0)
    wrong = pred_all != y.cpu().numpy()
    return TrustOutcome(pred_all, trust_all, wrong & (trust_all >= pipeline.alpha))


def _unit(grad: Tensor) -> Tensor:
    """``grad`` divided by each input's l_1 norm (0 stays 0); NaN and infinite slopes set to 0.

    A standard deviation of tied CSM entries (GGA's features) has an undefined slope: such
    pixels take no step rather than poisoning the input's whole direction.
    """
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    norm = grad.flatten(1).abs().sum(dim=1).clamp_min(1e-30)
    return grad / norm.view(-1, *([1] * (grad.dim() - 1)))


class AdaptiveTrustPGD(Attack):
    """l_inf PGD past the label, then toward clean views; the best iterate by real trust wins.

    See the module docstring. Untargeted only. With no fused view it can differentiate, it is the
    plain PGD keeping the best iterate by real trust.

    Args:
        model: classifier on [0, 1] pixels (the one ``pipeline`` serves).
        pipeline: the served pipeline; its scorer is what the attack knows and checks against.
        eps: l_inf budget.
        step_size: ``None`` means ``eps / 4`` (the project's PGD).
        steps: iterations.
        lam: weight of the evidence against the cross-entropy once the label is wrong.
        lam_before: its weight while the label is still right (0: plain PGD until then).
        check_every: score with the real pipeline every this many steps (and after the last).
        random_start: start from a uniformly random point of the ball.
        beta: sharpness of the GGA views' ``tanh`` surrogate of ``sign``.
        softplus_beta: sharpness of the Softplus of the GGA views' second derivatives.
        seed: seeds the random start.

    Raises:
        AttackParameterError: a parameter is out of range.
        ValueError: the pipeline has no scorer.
    """

    name = "adaptive-trust"
    supports_targeted = False

    def __init__(
        self,
        model: nn.Module,
        pipeline: GGAPipeline,
        eps: float = 0.3,
        step_size: float | None = None,
        steps: int = 100,
        lam: float = DEFAULT_LAM,
        lam_before: float = DEFAULT_LAM_BEFORE,
        check_every: int = DEFAULT_CHECK_EVERY,
        random_start: bool = True,
        beta: float = 3.0,
        softplus_beta: float = 10.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(model, seed=seed)
        if pipeline.scorer is None:
            raise ValueError("the adaptive attack needs a pipeline with a fitted trust scorer")
        self.eps = check_eps(eps, "linf")
        self.step_size = self.eps / 4 if step_size is None else step_size
        check_positive("step_size", self.step_size)
        check_positive("steps", steps, integer=True)
        check_positive("check_every", check_every, integer=True)
        for name, value in (("lam", lam), ("lam_before", lam_before)):
            if not value >= 0:  # also refuses NaN
                raise AttackParameterError(f"{name} must be 0 or more, got {value!r}")
        self.steps, self.check_every = steps, check_every
        self.lam, self.lam_before = float(lam), float(lam_before)
        self.random_start = random_start
        self.pipeline = pipeline
        self.surrogate = TrustSurrogate(
            pipeline.scorer, model, beta=beta, softplus_beta=softplus_beta
        )

    def direction(self, x: Tensor, y: Tensor) -> Tensor:
        """The ascent direction of each input (module docstring), before the sign.

        Args:
            x: iterates (B, C, H, W) requiring grad.
            y: (B,) true labels.

        Returns:
            (B, C, H, W): ``g_CE - w * g_evidence``, ``w`` = ``lam_before`` where the label is
            right and ``lam`` where it is wrong; each ``g`` l_1-normalised per input.
        """
        p = self.surrogate.start(x)
        ce = F.cross_entropy(p.logits, y, reduction="none")
        right = (p.predicted == y).view(-1, *([1] * (x.dim() - 1)))
        # The evidence (second order for the GGA views) is only computed where it is used.
        weight = torch.where(right, self.lam_before, self.lam).to(x.dtype)
        if not self.surrogate.attacked or not bool(weight.any()):
            return _unit(self.input_gradient(ce.sum(), x))
        evidence = self.surrogate.evidence(p)
        g_ce = _unit(torch.autograd.grad(ce.sum(), x, retain_graph=True)[0])
        return g_ce - weight * _unit(self.input_gradient(evidence.sum(), x))

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        x_adv = x.clone()
        if self.random_start:
            x_adv = (x + random_in_ball(x, self.eps, "linf", self.generator)).clamp(0.0, 1.0)
        best = x_adv.clone()
        best_key = torch.full((len(x),), -1.0, dtype=torch.float64, device=x.device)
        for step in range(1, self.steps + 1):
            x_adv.requires_grad_(True)
            step_dir = steepest_step(self.direction(x_adv, y), "linf")
            x_adv = x_adv.detach() + self.step_size * step_dir
            x_adv = (x + project(x_adv - x, self.eps, "linf")).clamp(0.0, 1.0)
            if step % self.check_every == 0 or step == self.steps:
                best, best_key = self._keep_best(x_adv, y, best, best_key)
        return best

    def _keep_best(
        self, x_adv: Tensor, y: Tensor, best: Tensor, best_key: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Keep, per input, the iterate the attacker prefers, judged by the real pipeline.

        Misclassified iterates beat the others, and among them the higher real trust wins;
        until an input has a misclassified iterate it follows the latest one. The surrogate's
        descent is not monotone in the real trust (p-values are steps, views the gradient
        leaves out move freely), so the last iterate is not necessarily the best.
        """
        outcome = trust_outcome(self.pipeline, x_adv.detach(), y, len(x_adv))
        hit = torch.as_tensor(outcome.pred, device=y.device) != y
        trust = torch.as_tensor(outcome.trust, dtype=torch.float64, device=y.device)
        key = trust + _HIT_BONUS * hit.double()
        never_hit = best_key < _HIT_BONUS
        better = (key > best_key) | (never_hit & ~hit)
        mask = better.view(-1, *([1] * (x_adv.dim() - 1)))
        return torch.where(mask, x_adv.detach(), best), torch.where(better, key, best_key)


@dataclass
class AdaptiveReport:
    """The plain and the adaptive attack on the same inputs, judged by the served pipeline.

    Attributes:
        n: inputs attacked (clean and correctly classified).
        plain_success: share whose plain PGD output is misclassified and trusted (not flagged).
        adaptive_success: the same share for the adaptive attack's output.
        either_success: share fooled by at least one of the two: what an attacker who runs both
            and keeps what works gets, the figure to quote.
        plain_misclassified: share whose plain PGD output is misclassified.
        adaptive_misclassified: share whose adaptive output is misclassified.
        lam: weight of the evidence once the label is wrong.
        lam_before: its weight while the label is still right.
        eps: l_inf budget.
        steps: iterations of both attacks.
        check_every: steps between the adaptive attack's real scorings.
        alpha: the scorer's flag threshold.
        views_attacked: the fused views the gradient pushes.
        views_not_attacked: the fused views without a surrogate (left out of the gradient).
    """

    n: int
    plain_success: float
    adaptive_success: float
    either_success: float
    plain_misclassified: float
    adaptive_misclassified: float
    lam: float
    lam_before: float
    eps: float
    steps: int
    check_every: int
    alpha: float
    views_attacked: tuple[str, ...]
    views_not_attacked: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["views_attacked"] = list(self.views_attacked)
        data["views_not_attacked"] = list(self.views_not_attacked)
        return data


@dataclass
class AdaptiveRun:
    """An ``attack_trust`` run: the report and what the adaptive attack returned.

    Attributes:
        report: the success figures.
        x_adv: (N, C, H, W) the adaptive attack's inputs.
        outcome: the pipeline's verdict on them.
        plain: the pipeline's verdict on the plain attack's inputs.
    """

    report: AdaptiveReport
    x_adv: Tensor
    outcome: TrustOutcome
    plain: TrustOutcome


def attack_trust(
    model: nn.Module,
    pipeline: GGAPipeline,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int,
    lam: float = DEFAULT_LAM,
    lam_before: float = DEFAULT_LAM_BEFORE,
    check_every: int = DEFAULT_CHECK_EVERY,
    seed: int = 0,
    batch_size: int = 50,
    progress: Callable[..., Any] | None = None,
) -> AdaptiveRun:
    """The plain PGD and the adaptive attack on ``x``, both judged by the real pipeline.

    Args:
        model: the classifier the pipeline serves.
        pipeline: the served pipeline with its fitted scorer.
        x: clean, correctly classified inputs (N, C, H, W) in [0, 1].
        y: (N,) their labels.
        eps: l_inf budget of both attacks.
        steps: iterations of both attacks (steps of eps / 4).
        lam: weight of the evidence once the label is wrong (``AdaptiveTrustPGD``).
        lam_before: its weight while the label is still right.
        check_every: steps between the adaptive attack's real scorings.
        seed: seeds both attacks' random starts (the same start for both).
        batch_size: inputs per attack batch and pipeline call.
        progress: wraps each attack's batch iterator (``attacks.evaluate.run_attack``).

    Returns:
        The ``AdaptiveRun``.

    Raises:
        AttackParameterError: a parameter is out of range.
    """
    plain = ATTACKS.make("pgd", model, eps=eps, steps=steps, seed=seed)
    adaptive = AdaptiveTrustPGD(
        model,
        pipeline,
        eps=eps,
        steps=steps,
        lam=lam,
        lam_before=lam_before,
        check_every=check_every,
        seed=seed,
    )
    x_plain = run_attack(plain, x, y, batch_size=batch_size, progress=progress).x_adv
    x_adv = run_attack(adaptive, x, y, batch_size=batch_size, progress=progress).x_adv
    # Both outputs rescored as they are returned: the report's verdict is the pipeline's own.
    plain_out = trust_outcome(pipeline, x_plain, y, batch_size)
    adaptive_out = trust_outcome(pipeline, x_adv, y, batch_size)
    report = _report(adaptive, plain_out, adaptive_out, y, steps)
    logger.info("adaptive attack on the trust score: %s", report.to_dict())
    return AdaptiveRun(report, x_adv, adaptive_out, plain_out)


def _report(
    attack: AdaptiveTrustPGD, plain: TrustOutcome, adaptive: TrustOutcome, y: Tensor, steps: int
) -> AdaptiveReport:
    """The shares of ``y``'s inputs each attack fooled and misclassified."""
    y_np = y.cpu().numpy()
    n = max(len(y_np), 1)

    def share(mask: np.ndarray) -> float:
        return float(mask.sum() / n)

    return AdaptiveReport(
        n=len(y_np),
        plain_success=share(plain.success),
        adaptive_success=share(adaptive.success),
        either_success=share(plain.success | adaptive.success),
        plain_misclassified=share(plain.pred != y_np),
        adaptive_misclassified=share(adaptive.pred != y_np),
        lam=attack.lam,
        lam_before=attack.lam_before,
        eps=attack.eps,
        steps=steps,
        check_every=attack.check_every,
        alpha=float(attack.pipeline.alpha),
        views_attacked=attack.surrogate.attacked,
        views_not_attacked=attack.surrogate.left_out,
    )
