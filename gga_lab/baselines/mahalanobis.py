"""Mahalanobis (Lee et al. 2018): class-conditional Gaussians with a tied covariance on the
penultimate features ``model.embed(x)``, with input preprocessing."""

from typing import Any, Self

import numpy as np
import torch
from torch import Tensor, nn

from detectors.base import DetectorFitError, as_features
from gga_lab.baselines.common import EPS_GRID, ModelDetector, as_inputs, batched, preprocess


class Mahalanobis(ModelDetector):
    """Outlier score ``min_c (f - mu_c)^T Sigma^-1 (f - mu_c)`` on preprocessed inputs.

    Only the penultimate layer is used (no feature ensemble or regression over layers, which
    Lee et al. tune on out-of-distribution or adversarial data).

    Args:
        model: classifier on [0, 1] pixels with ``embed(x)`` giving penultimate features.
        eps: preprocessing step; ``None`` tunes it in ``fit`` on the clean training inputs over
            ``EPS_GRID`` (highest mean clean confidence, as for ODIN).
        batch_size: inputs per batch.

    Raises:
        TypeError: the model has no ``embed`` method.
    """

    kind = "mahalanobis"

    def __init__(self, model: nn.Module, eps: float | None = None, batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        if not callable(getattr(model, "embed", None)):
            raise TypeError(
                f"{type(model).__name__} has no embed(x) method giving penultimate features"
            )
        self.eps = eps
        self.means: Tensor | None = None  # (C, F)
        self.precision: Tensor | None = None  # (F, F)

    def fit(self, x: Any, y: Any) -> Self:
        """Fit Gaussians on clean training inputs ``x`` with labels ``y``, then tune ``eps``."""
        x = as_inputs(x)
        with torch.no_grad():
            z = batched(self.model.embed, x, self.batch_size)
        self.fit_features(z, y)
        if self.eps is None:
            means = {}
            for eps in EPS_GRID:
                self.eps = eps
                means[eps] = -float(np.mean(self.predict(x[:500])))
            self.eps = max(means, key=means.get)
        return self

    def fit_features(self, z: Any, y: Any) -> Self:
        """Class means and tied covariance from embeddings ``z`` (N, F) and labels ``y`` (N,).

        Raises:
            DetectorFitError: labels missing, or a class with fewer than 2 inputs.
        """
        z = as_features(z, "embeddings")
        if y is None:
            raise DetectorFitError("Mahalanobis needs labels y to fit class-conditional Gaussians")
        y = np.asarray(y).reshape(-1).astype(np.int64)
        classes = int(y.max()) + 1
        counts = np.bincount(y, minlength=classes)
        if counts.min() < 2:
            raise DetectorFitError(
                f"Mahalanobis needs at least 2 inputs per class, got counts {counts.tolist()}"
            )
        means = np.stack([z[y == c].mean(axis=0) for c in range(classes)])
        centred = z - means[y]
        cov = centred.T @ centred / len(z)
        self.means = torch.as_tensor(means, dtype=torch.float32)
        self.precision = torch.as_tensor(np.linalg.pinv(cov, hermitian=True), dtype=torch.float32)
        self._fitted = True
        return self

    def _distances(self, f: Tensor) -> Tensor:
        d = f[:, None, :] - self.means[None]  # (B, C, F)
        return torch.einsum("bcf,fg,bcg->bc", d, self.precision, d)

    def predict_features(self, z: Any) -> np.ndarray:
        """Scores (N,) from embeddings (N, F), without preprocessing."""
        self._check_fitted()
        f = torch.as_tensor(as_features(z, "embeddings"), dtype=torch.float32)
        return self._distances(f).amin(dim=1).double().numpy()

    def predict(self, x: Any) -> np.ndarray:
        self._check_fitted()

        def score(batch: Tensor) -> Tensor:
            # Lee et al.: step toward the closest class's mean (raise -distance), then re-score.
            batch = preprocess(
                batch, lambda b: -self._distances(self.model.embed(b)).amin(1), self.eps
            )
            with torch.no_grad():
                return self._distances(self.model.embed(batch)).amin(dim=1)

        return batched(score, as_inputs(x), self.batch_size)
