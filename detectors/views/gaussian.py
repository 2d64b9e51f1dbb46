"""Class-conditional Gaussians with one tied covariance, as the Mahalanobis views fit them.

Lee et al. (2018): class means and one shared covariance of a layer's features on clean
training inputs; an input's score is its smallest squared Mahalanobis distance to a class mean.
The covariance is Ledoit-Wolf shrunk, so it stays invertible with few inputs per feature.
Features wider than ``detectors.views.projection.MAX_DIM`` are first projected on their leading
principal components. The ``mahalanobis`` view fits one on the penultimate features, and the
``blocks`` view fits one per block.
"""

from typing import Any, Self

import numpy as np
from sklearn.covariance import LedoitWolf

from detectors.arrays import decode_array, encode_array, quantize
from detectors.base import DetectorFitError, as_features
from detectors.views.projection import Projection


class ClassGaussian:
    """Class means and a tied precision of some features, with the distance they define."""

    def __init__(self) -> None:
        self.projection = Projection()
        self.means: np.ndarray | None = None  # (C, D); NaN rows for classes never seen
        self.precision: np.ndarray | None = None  # (D, D)
        self._whiten: tuple[np.ndarray, np.ndarray] | None = None  # see whitened

    @classmethod
    def fit(cls, h: np.ndarray, predicted: np.ndarray, num_classes: int, what: str) -> Self:
        """Fit on features ``h`` (N, F) of clean, correctly classified inputs.

        Args:
            h: the features.
            predicted: (N,) their classes.
            num_classes: the model's number of classes.
            what: the features' name, for errors.

        Raises:
            DetectorFitError: fewer than 20 inputs or fewer than two classes, or non-finite
                features.
        """
        h = as_features(h, what)
        present = np.unique(predicted)
        if len(h) < 20 or len(present) < 2:
            raise DetectorFitError(
                f"a Gaussian of the {what} needs at least 20 fitting inputs from two classes or "
                f"more; got {len(h)} from {len(present)}: raise --n-fit"
            )
        gaussian = cls()
        gaussian.projection = Projection.fit(h)
        h = gaussian.projection(h)
        means = np.zeros((num_classes, h.shape[1]))
        centred = np.empty_like(h)
        for c in present:
            own = predicted == c
            means[c] = h[own].mean(axis=0)
            centred[own] = h[own] - means[c]
        # A class never predicted on the fitting data has no mean: keep it out of the minimum.
        means[np.setdiff1d(np.arange(num_classes), present)] = np.nan
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        gaussian.means = quantize(means, "float32")
        gaussian.precision = quantize(precision, "float32")
        return gaussian

    def whitened(self) -> tuple[np.ndarray, np.ndarray]:
        """``W`` with ``W W^T = precision``, and the known class means times ``W``.

        Then ``d^T P d = |d W|^2``: one matrix product for the batch instead of a quadratic form
        per input and class (150 ms a batch of 32 with 500 features through einsum, against a
        few ms). Both are computed once, on first use.
        """
        assert self.means is not None and self.precision is not None
        if self._whiten is None:
            try:
                whiten = np.linalg.cholesky(self.precision)
            except np.linalg.LinAlgError:  # float32 storage can cost positive definiteness
                values, vectors = np.linalg.eigh(self.precision)
                whiten = vectors * np.sqrt(np.clip(values, 0.0, None))
            known = ~np.isnan(self.means[:, 0])
            self._whiten = (whiten, self.means[known] @ whiten)
        return self._whiten

    def min_distance(self, h: np.ndarray) -> np.ndarray:
        """The smallest squared Mahalanobis distance (N,) of features ``h`` to a class mean."""
        whiten, means = self.whitened()  # means: (C', D), the classes seen at fit
        w = self.projection(np.asarray(h, dtype=np.float64)) @ whiten  # (N, D)
        return ((w[:, None, :] - means[None, :, :]) ** 2).sum(axis=2).min(axis=1)

    def get_params(self) -> dict[str, Any]:
        assert self.means is not None and self.precision is not None
        return {
            "projection": self.projection.get_params(),
            "means": encode_array(self.means, "float32"),
            "precision": encode_array(self.precision, "float32"),
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        """Rebuild from ``get_params`` output.

        Raises:
            ValueError: the precision does not fit the means.
        """
        gaussian = cls()
        gaussian.projection = Projection.from_params(params.get("projection"))
        gaussian.means = decode_array(params["means"]).astype(np.float64)
        gaussian.precision = decode_array(params["precision"]).astype(np.float64)
        if gaussian.precision.shape != (gaussian.means.shape[1],) * 2:
            raise ValueError(
                f"precision of shape {gaussian.precision.shape} does not fit means "
                f"{gaussian.means.shape}"
            )
        return gaussian
