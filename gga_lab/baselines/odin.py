"""ODIN (Liang et al. 2018): temperature scaling plus input preprocessing.

The score of the preprocessed input is the ``msp`` view's maths at temperature T
(``detectors.views.logits.msp_score``); the preprocessing, a backward and a second forward per
input, is what no served view does.
"""

from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.views.logits import msp_score
from gga_lab.baselines.common import EPS_GRID, ModelDetector, as_inputs, batched, preprocess


def odin_preprocessing(model: nn.Module, x: Tensor, temperature: float, eps: float) -> Tensor:
    """``x + eps * sign(grad_x log max_c softmax(f(x) / T)_c)``: a step that raises confidence.

    Args:
        model: classifier on [0, 1] pixels.
        x: inputs (B, C, H, W).
        temperature: T.
        eps: step size in pixels.

    Returns:
        Preprocessed inputs in [0, 1].
    """

    def log_confidence(inp: Tensor) -> Tensor:
        return F.log_softmax(model(inp) / temperature, dim=1).amax(dim=1)

    return preprocess(x, log_confidence, eps)


class ODIN(ModelDetector):
    """Outlier score ``-max_c softmax(f(x~) / T)_c`` on preprocessed x~; higher = less trusted.

    Args:
        model: classifier on [0, 1] pixels.
        temperature: T (Liang et al.: 1000).
        eps: preprocessing step; ``None`` tunes it in ``fit`` on clean inputs over ``EPS_GRID``,
            taking the step with the highest mean clean-input confidence (Generalized ODIN's
            criterion, which needs no out-of-distribution data).
        batch_size: inputs per batch.
    """

    kind = "odin"

    def __init__(
        self,
        model: nn.Module,
        temperature: float = 1000.0,
        eps: float | None = None,
        batch_size: int = 256,
    ) -> None:
        super().__init__(model, batch_size)
        self.temperature = float(temperature)
        self.eps = eps
        self._fitted = eps is not None

    def fit(self, x: Any, y: Any = None) -> Self:
        """Tune ``eps`` on clean inputs ``x`` (a few hundred suffice); labels are unused."""
        x = as_inputs(x)
        if self.eps is None:
            self._fitted = True
            means = {}
            for eps in EPS_GRID:
                self.eps = eps
                means[eps] = -float(np.mean(self.predict(x)))
            self.eps = max(means, key=means.get)
        self._fitted = True
        return self

    def fit_features(self, z: Any, y: Any = None) -> Self:
        raise TypeError("ODIN preprocesses inputs: call fit(x) with images, not features")

    def predict_features(self, z: Any) -> np.ndarray:
        """Scores (N,) from logits (N, C) of already preprocessed inputs."""
        self._check_fitted()
        return msp_score(np.asarray(z, dtype=np.float64), self.temperature)

    def predict(self, x: Any) -> np.ndarray:
        self._check_fitted()

        def logits(batch: Tensor) -> Tensor:
            batch = odin_preprocessing(self.model, batch, self.temperature, self.eps)
            with torch.no_grad():
                return self.model(batch)

        return self.predict_features(batched(logits, as_inputs(x), self.batch_size))
