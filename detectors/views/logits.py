"""Views of the logits alone: the energy score and the maximum softmax probability.

Nothing to fit; they are here so the fused trust score can use what the forward pass gives for
free. ``energy`` is ``-logsumexp(z)`` (Liu et al. 2020, T = 1); ``msp`` is ``-max softmax(z)``
(Hendrycks and Gimpel 2017).
"""

from typing import Any, Self

import numpy as np
from scipy.special import logsumexp, softmax

from detectors.views.base import View, ViewInputs, fitted_view


class EnergyView(View):
    name = "energy"
    title = "logit energy"

    def _fit(self, z: ViewInputs) -> None:
        pass  # a fixed function of the logits

    def _score(self, z: ViewInputs) -> np.ndarray:
        return -logsumexp(np.asarray(z.logits, dtype=np.float64), axis=1)

    def get_params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        return fitted_view(cls())


class MSPView(View):
    name = "msp"
    title = "confidence"

    def _fit(self, z: ViewInputs) -> None:
        pass  # a fixed function of the logits

    def _score(self, z: ViewInputs) -> np.ndarray:
        return -softmax(np.asarray(z.logits, dtype=np.float64), axis=1).max(axis=1)

    def get_params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        return fitted_view(cls())
