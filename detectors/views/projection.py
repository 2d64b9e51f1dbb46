"""A PCA projection that keeps Gaussian views small for wide inputs.

A Gaussian on F features stores an F x F precision matrix in ``detector.json``: 256 features
take 0.25 MB as float32, 2,048 (an imported ResNet-50's penultimate layer) 16 MB. Past
``MAX_DIM`` the views first project onto the leading principal components of their clean
fitting data, which also keeps the covariance estimable from a few thousand images.
"""

from typing import Any

import numpy as np

from detectors.arrays import decode_array, encode_array, quantize

MAX_DIM = 256


class Projection:
    """Centre and project onto the top principal components (identity when narrow enough).

    Args:
        mean: (F,) centre, or ``None`` for the identity.
        components: (D, F) orthonormal rows, or ``None``.
    """

    def __init__(self, mean: np.ndarray | None = None, components: np.ndarray | None = None):
        self.mean = mean
        self.components = components

    @classmethod
    def fit(cls, x: np.ndarray, max_dim: int = MAX_DIM) -> "Projection":
        """The identity if ``x`` (N, F) has at most ``max_dim`` columns, else its top PCs."""
        if x.shape[1] <= max_dim:
            return cls()
        mean = x.mean(axis=0)
        dims = max(1, min(max_dim, len(x) - 1))
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        return cls(quantize(mean, "float32"), quantize(vt[:dims], "float32"))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.components is None:
            return x
        return (x - self.mean) @ self.components.T

    def get_params(self) -> dict[str, Any] | None:
        if self.components is None:
            return None
        return {
            "mean": encode_array(self.mean, "float32"),
            "components": encode_array(self.components, "float32"),
        }

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> "Projection":
        if params is None:
            return cls()
        mean = decode_array(params["mean"]).astype(np.float64)
        components = decode_array(params["components"]).astype(np.float64)
        if components.ndim != 2 or components.shape[1] != mean.shape[0]:
            raise ValueError(f"projection {components.shape} does not fit a centre {mean.shape}")
        return cls(mean, components)
