"""The energy score (Liu et al. 2020): ``E(x) = -T logsumexp(z / T)``."""

from typing import Any, Self

import numpy as np
import torch
from torch import nn

from detectors.baselines.common import ModelDetector, as_inputs, batched


class EnergyScore(ModelDetector):
    """Outlier score = the free energy ``-T logsumexp(z / T)``; higher = less trustworthy.

    Args:
        model: classifier on [0, 1] pixels.
        temperature: T (Liu et al. use 1).
        batch_size: inputs per forward pass.
    """

    kind = "energy"

    def __init__(self, model: nn.Module, temperature: float = 1.0, batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def fit(self, x: Any = None, y: Any = None) -> Self:
        self._fitted = True
        return self

    def fit_features(self, z: Any = None, y: Any = None) -> Self:
        return self.fit()

    def predict_features(self, z: Any) -> np.ndarray:
        """Scores (N,) from logits (N, C)."""
        self._check_fitted()
        logits = torch.as_tensor(np.asarray(z, dtype=np.float64))
        t = self.temperature
        return (-t * torch.logsumexp(logits / t, dim=1)).numpy()

    @torch.no_grad()
    def predict(self, x: Any) -> np.ndarray:
        self._check_fitted()
        return self.predict_features(batched(self.model, as_inputs(x), self.batch_size))
