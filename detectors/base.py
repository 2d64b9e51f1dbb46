"""The detector contract, in the shape of pytorch-ood's ``Detector``.

Every detector gives an *outlier score*: higher values mean the input is less trustworthy. ``fit``
returns the detector itself so calls chain; ``fit_features`` and ``predict_features`` work on
precomputed features (GGA features, logits or embeddings, depending on the detector), ``fit`` and
``predict`` on whatever the detector extracts features from. Using a detector before it is fitted
raises ``NotFittedError`` with the remedy.
"""

import abc
from typing import Any, Self

import numpy as np
from torch import Tensor

from models.errors import GGAUserError


class NotFittedError(GGAUserError, RuntimeError):
    """A detector was used before ``fit``."""

    def __init__(self, message: str = "You have to call fit() before predict()") -> None:
        super().__init__(message)


class DetectorFitError(GGAUserError, ValueError):
    """Fitting cannot proceed: too few usable inputs, or features that are not finite."""


def as_features(z: Any, name: str = "features") -> np.ndarray:
    """``z`` as a float64 (N, D) array whose entries are all finite.

    Args:
        z: array-like or tensor, (N, D).
        name: what ``z`` is, for the error message.

    Returns:
        The features as a C-contiguous float64 array.

    Raises:
        DetectorFitError: ``z`` is not two-dimensional or holds NaN or infinity.
    """
    if isinstance(z, Tensor):
        z = z.detach().cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(z, dtype=np.float64))
    if arr.ndim != 2:
        raise DetectorFitError(f"{name} must be a (N, D) array, got shape {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DetectorFitError(
            f"{name}: {int(bad.sum())} of {len(arr)} rows hold NaN or infinity (first at row "
            f"{int(np.argmax(bad))}); a zero gradient map makes the CSM undefined: drop those "
            "inputs, or check the model and engine options"
        )
    return arr


class Detector(abc.ABC):
    """Base of every detector: ``fit -> self``, ``predict`` = outlier score, higher = less trusted.

    Subclasses implement ``fit_features`` and ``predict_features``; detectors that compute their
    own features from inputs (the baselines) override ``fit`` and ``predict`` as well.
    """

    @property
    @abc.abstractmethod
    def fitted(self) -> bool:
        """Whether ``fit`` has been called."""

    @abc.abstractmethod
    def fit_features(self, z: Any, y: Any = None) -> Self:
        """Fit on precomputed features ``z`` (N, D) and optional labels ``y`` (N,)."""

    @abc.abstractmethod
    def predict_features(self, z: Any) -> np.ndarray:
        """Outlier scores (N,) of precomputed features; higher means less trustworthy."""

    def fit(self, x: Any, y: Any = None) -> Self:
        """Fit on inputs; for feature detectors the inputs are the features themselves."""
        return self.fit_features(x, y)

    def predict(self, x: Any) -> np.ndarray:
        """Outlier scores (N,) of inputs; higher means less trustworthy."""
        return self.predict_features(x)

    def __call__(self, x: Any) -> np.ndarray:
        return self.predict(x)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError()
