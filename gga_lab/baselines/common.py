"""Helpers shared by the baselines: batched evaluation and the input-preprocessing step."""

import abc
from collections.abc import Callable
from typing import Any, Self

import numpy as np
import torch
from torch import Tensor, nn

from detectors.base import Detector, NotFittedError

# Liang et al. / Lee et al. tune the preprocessing magnitude on out-of-distribution data; with
# clean training data only, Generalized ODIN (Hsu et al. 2020) picks the magnitude that maximises
# the in-distribution score. This grid is theirs, cut at 0.04 (larger steps destroy MNIST digits).
EPS_GRID: tuple[float, ...] = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04)


def as_inputs(x: Any) -> Tensor:
    """``x`` as a float tensor (N, C, H, W) in [0, 1] on the CPU.

    Raises:
        ValueError: not a 4-D float batch.
    """
    x = torch.as_tensor(x)
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"inputs must be float pixels (N, C, H, W) in [0, 1], got {tuple(x.shape)}"
        )
    return x


def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 256) -> np.ndarray:
    """Concatenate ``fn`` over batches of ``x`` as a float64 numpy array."""
    parts = [fn(x[i : i + batch_size]).detach().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(parts).double().numpy()


def preprocess(x: Tensor, confidence: Callable[[Tensor], Tensor], eps: float) -> Tensor:
    """One signed-gradient step of size ``eps`` that raises ``confidence(x).sum()``, clamped.

    Args:
        x: inputs (B, C, H, W) in [0, 1].
        confidence: per-input score to raise (B,).
        eps: step size in pixel units; 0 returns ``x`` unchanged.

    Returns:
        The preprocessed inputs, detached.
    """
    if eps == 0:
        return x
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(confidence(x).sum(), x)
    return (x + eps * grad.sign()).clamp(0.0, 1.0).detach()


class ModelDetector(Detector):
    """A baseline computing its own features from a model; ``fit``/``predict`` take inputs.

    Args:
        model: classifier on [0, 1] pixels, used in eval mode.
        batch_size: inputs per forward pass.
    """

    def __init__(self, model: nn.Module, batch_size: int = 256) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self._fitted = False

    @property
    def fitted(self) -> bool:
        return self._fitted

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError()


class LogitScore(ModelDetector):
    """A baseline that is a fixed function of the logits: nothing to fit, one forward to score.

    ``fit`` only marks the detector ready, so the contract matches the fitted detectors.
    Subclasses implement :meth:`score_logits`.
    """

    @abc.abstractmethod
    def score_logits(self, logits: np.ndarray) -> np.ndarray:
        """Outlier scores (N,) from float64 logits (N, C); higher = less trustworthy."""

    def fit(self, x: Any = None, y: Any = None) -> Self:
        self._fitted = True
        return self

    def fit_features(self, z: Any = None, y: Any = None) -> Self:
        return self.fit()

    def predict_features(self, z: Any) -> np.ndarray:
        """Scores (N,) from logits (N, C)."""
        self._check_fitted()
        return self.score_logits(np.asarray(z, dtype=np.float64))

    @torch.no_grad()
    def predict(self, x: Any) -> np.ndarray:
        self._check_fitted()
        return self.predict_features(batched(self.model, as_inputs(x), self.batch_size))
