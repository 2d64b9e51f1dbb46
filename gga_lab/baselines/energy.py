"""The energy score (Liu et al. 2020): ``E(x) = -T logsumexp(z / T)``, the ``energy`` view's
maths at any temperature."""

import numpy as np
from torch import nn

from detectors.views.logits import energy_score
from gga_lab.baselines.common import LogitScore


class EnergyScore(LogitScore):
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

    def score_logits(self, logits: np.ndarray) -> np.ndarray:
        return energy_score(logits, self.temperature)
