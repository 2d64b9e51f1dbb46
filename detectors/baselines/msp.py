"""Maximum softmax probability (Hendrycks and Gimpel 2017)."""

from typing import Any, Self

import numpy as np
import torch

from detectors.baselines.common import ModelDetector, as_inputs, batched


class MaxSoftmax(ModelDetector):
    """Outlier score ``-max_c softmax(z)_c``; higher = less trustworthy. Nothing to fit.

    ``fit`` only marks the detector ready, so the contract matches the others.
    """

    kind = "msp"

    def fit(self, x: Any = None, y: Any = None) -> Self:
        self._fitted = True
        return self

    def fit_features(self, z: Any = None, y: Any = None) -> Self:
        return self.fit()

    def predict_features(self, z: Any) -> np.ndarray:
        """Scores (N,) from logits (N, C)."""
        self._check_fitted()
        logits = torch.as_tensor(np.asarray(z, dtype=np.float64))
        return -torch.softmax(logits, dim=1).amax(dim=1).numpy()

    @torch.no_grad()
    def predict(self, x: Any) -> np.ndarray:
        self._check_fitted()
        return self.predict_features(batched(self.model, as_inputs(x), self.batch_size))
