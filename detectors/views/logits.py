"""Views of the logits alone: the energy score and the maximum softmax probability.

Nothing to fit; they are here so the fused trust score can use what the forward pass gives for
free. ``energy`` is ``-logsumexp(z)`` (Liu et al. 2020, T = 1); ``msp`` is ``-max softmax(z)``
(Hendrycks and Gimpel 2017). Their functional cores, ``energy_score`` and ``msp_score``, take a
temperature, so the lab's baselines (the energy score at any T, ODIN at T = 1000) share them.
"""

from typing import Any, Self

import numpy as np

from detectors.views.base import View, ViewInputs, fitted_view


def logsumexp(z: np.ndarray) -> np.ndarray:
    """``log sum exp`` of each row, shifted by its maximum so no exponent overflows."""
    top = z.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by each row's maximum."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def energy_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The free energy ``-T logsumexp(z / T)`` of each row of ``logits`` (N, C); higher = less
    trusted."""
    z = np.asarray(logits, dtype=np.float64)
    return -temperature * logsumexp(z / temperature)


def msp_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Minus the largest softmax probability of ``z / T``, per row of ``logits`` (N, C); higher =
    less trusted."""
    z = np.asarray(logits, dtype=np.float64)
    return -softmax(z / temperature).max(axis=1)


class EnergyView(View):
    name = "energy"
    title = "logit energy"

    def _fit(self, z: ViewInputs) -> None:
        pass  # a fixed function of the logits

    def _score(self, z: ViewInputs) -> np.ndarray:
        return energy_score(z.logits)

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
        return msp_score(z.logits)

    def get_params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        return fitted_view(cls())
