"""Run an attack over a data set in batches and summarise what it did."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attacks.base import Attack, eval_mode
from attacks.norms import perturbation_norm


@dataclass
class AttackRun:
    """An attack's outcome on a whole set of inputs (all tensors on CPU).

    Attributes:
        x: clean inputs (N, C, H, W).
        x_adv: adversarial inputs (N, C, H, W).
        y: (N,) labels.
        pred_clean: (N,) predictions on ``x``.
        pred_adv: (N,) predictions on ``x_adv``.
        success: (N,) bool, as the attack defines it (untargeted or targeted).
        target: (N,) targets, or ``None`` when untargeted.
    """

    x: Tensor
    x_adv: Tensor
    y: Tensor
    pred_clean: Tensor
    pred_adv: Tensor
    success: Tensor
    target: Tensor | None


def run_attack(
    attack: Attack,
    x: Tensor,
    y: Tensor,
    target: Tensor | None = None,
    batch_size: int = 100,
    progress: Any = None,
) -> AttackRun:
    """Attack ``x`` batch by batch.

    Args:
        attack: the attack (fitted already, if it needs fitting).
        x: inputs (N, C, H, W) in [0, 1].
        y: (N,) labels.
        target: (N,) target classes for ``TargetMode.GIVEN``, else ``None``.
        batch_size: inputs per batch.
        progress: optional callable wrapping the batch iterator (e.g. ``tqdm``-like), given an
            iterable and ``total``.

    Returns:
        The collected outcome.
    """
    starts: Iterable[int] = range(0, len(x), batch_size)
    if progress is not None:
        starts = progress(starts, total=(len(x) + batch_size - 1) // batch_size)
    parts: dict[str, list[Tensor]] = {"x_adv": [], "pred_clean": [], "pred_adv": [], "success": []}
    targets: list[Tensor] = []
    for start in starts:
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        tb = None if target is None else target[start : start + batch_size]
        with eval_mode(attack.model), torch.no_grad():
            parts["pred_clean"].append(attack.logits(xb).argmax(dim=1).cpu())
        result = attack(xb, yb, target=tb)
        parts["x_adv"].append(result.x_adv.cpu())
        parts["pred_adv"].append(result.pred.cpu())
        parts["success"].append(result.success.cpu())
        if result.target is not None:
            targets.append(result.target.cpu())
    return AttackRun(
        x=x.cpu(),
        y=y.cpu(),
        target=torch.cat(targets) if targets else None,
        **{k: torch.cat(v) for k, v in parts.items()},
    )


def summarize(run: AttackRun) -> dict[str, float]:
    """Success rates, perturbation norms and accuracies of a run.

    Returns:
        ``n``; ``success_rate`` over all inputs; ``success_rate_on_correct`` over the inputs the
        model classified correctly before the attack (NaN if none); ``mean_linf`` and
        ``mean_l2`` of the perturbations; ``clean_accuracy`` and ``adversarial_accuracy``.
    """
    correct = run.pred_clean == run.y
    delta = run.x_adv - run.x
    nan = float("nan")
    n = len(run.y)
    return {
        "n": float(n),
        "success_rate": float(run.success.float().mean()) if n else nan,
        "success_rate_on_correct": float(run.success[correct].float().mean())
        if correct.any()
        else nan,
        "mean_linf": float(perturbation_norm(delta, "linf").mean()) if n else nan,
        "mean_l2": float(perturbation_norm(delta, "l2").mean()) if n else nan,
        "clean_accuracy": float(correct.float().mean()) if n else nan,
        "adversarial_accuracy": float((run.pred_adv == run.y).float().mean()) if n else nan,
    }
