"""LODA, the lightweight on-line detector of anomalies (Pevny 2016), GGA's published detector.

k sparse random projections of the (standardised) features, a histogram of each projection on the
fitting data, and an outlier score equal to the mean negative log density over the projections.
Unsupervised: fitted on the features of clean, correctly classified training inputs only.
"""

import math
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from detectors.base import Detector, DetectorFitError, as_features

MIN_FIT = 10  # fewer points than this cannot fill a histogram meaningfully


@dataclass
class LODAParams:
    """The fitted state, all plain arrays (what ``detector.json`` stores).

    Attributes:
        mean, scale: (D,) standardisation of the features before projection.
        weights: (k, D) sparse projection vectors (about sqrt(D) non-zeros each).
        lower, width: (k,) left edge and bin width of each histogram.
        log_density: (k, bins) log density per bin, empty bins already at the floor.
        floor: log density given to empty bins and to values outside a histogram's range.
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    lower: np.ndarray
    width: np.ndarray
    log_density: np.ndarray
    floor: float


class LODA(Detector):
    """LODA outlier scores: ``-mean_j log p_j(w_j . z)``; higher = less trustworthy.

    Args:
        projections: number of random projections k (the paper: 100).
        bins: histogram bins per projection (the paper: 100 for MNIST, 500 for CIFAR).
        seed: seeds the projections; the same seed and data give the same detector.
        floor_count: pseudo-count for an empty bin; its density ``floor_count / (n * width)``
            is also used for values outside the fitted range, so unseen regions score high but
            finite.

    Raises:
        ValueError: a parameter is not positive.
    """

    kind = "loda"

    def __init__(
        self, projections: int = 100, bins: int = 100, seed: int = 0, floor_count: float = 0.5
    ) -> None:
        if projections < 1 or bins < 1 or floor_count <= 0:
            raise ValueError(
                f"projections and bins must be >= 1 and floor_count > 0, got {projections}, "
                f"{bins}, {floor_count}"
            )
        self.projections = int(projections)
        self.bins = int(bins)
        self.seed = int(seed)
        self.floor_count = float(floor_count)
        self.params: LODAParams | None = None

    @property
    def fitted(self) -> bool:
        return self.params is not None

    def fit_features(self, z: Any, y: Any = None) -> Self:
        """Fit projections and histograms on features ``z`` (N, D); ``y`` is ignored.

        Raises:
            DetectorFitError: fewer than ``MIN_FIT`` rows, or NaN/infinite features.
        """
        z = as_features(z)
        n, d = z.shape
        if n < MIN_FIT:
            raise DetectorFitError(f"LODA needs at least {MIN_FIT} inputs to fit, got {n}")
        mean = z.mean(axis=0)
        scale = z.std(axis=0)
        # A feature constant on clean data (e.g. a max pinned at 1) would divide by zero.
        scale = np.where(scale > 1e-12, scale, 1.0)
        rng = np.random.default_rng(self.seed)
        nonzero = max(1, round(math.sqrt(d)))
        weights = np.zeros((self.projections, d))
        for j in range(self.projections):
            idx = rng.choice(d, size=nonzero, replace=False)
            weights[j, idx] = rng.standard_normal(nonzero)
        proj = ((z - mean) / scale) @ weights.T  # (n, k)
        lower = proj.min(axis=0)
        span = proj.max(axis=0) - lower
        width = np.where(span > 1e-12, span, 1.0) / self.bins
        log_density = np.empty((self.projections, self.bins))
        for j in range(self.projections):
            idx = _bin_index(proj[:, j], lower[j], width[j], self.bins)
            counts = np.bincount(idx, minlength=self.bins).astype(np.float64)
            counts = np.maximum(counts, self.floor_count)
            log_density[j] = np.log(counts / (n * width[j]))
        floor = float(np.min(np.log(self.floor_count / (n * width))))
        self.params = LODAParams(mean, scale, weights, lower, width, log_density, floor)
        return self

    def predict_features(self, z: Any) -> np.ndarray:
        """Outlier scores (N,) of features ``z`` (N, D).

        Raises:
            NotFittedError: before ``fit``.
            DetectorFitError: ``z`` holds NaN or infinity or has the wrong width.
        """
        self._check_fitted()
        p = self.params
        z = as_features(z)
        if z.shape[1] != p.weights.shape[1]:
            raise DetectorFitError(
                f"features have {z.shape[1]} columns, the detector was fitted on "
                f"{p.weights.shape[1]}"
            )
        proj = ((z - p.mean) / p.scale) @ p.weights.T  # (N, k)
        pos = np.floor((proj - p.lower) / p.width)
        inside = (pos >= 0) & (pos < self.bins)
        idx = np.clip(pos, 0, self.bins - 1).astype(np.int64)
        logd = np.take_along_axis(p.log_density, idx.T, axis=1).T  # (N, k)
        logd = np.where(inside, logd, p.floor)
        return -logd.mean(axis=1)

    def get_params(self) -> dict[str, Any]:
        """The fitted state as JSON-ready lists (floats round-trip exactly through JSON)."""
        self._check_fitted()
        p = self.params
        return {
            "projections": self.projections,
            "bins": self.bins,
            "seed": self.seed,
            "floor_count": self.floor_count,
            "mean": p.mean.tolist(),
            "scale": p.scale.tolist(),
            "weights": p.weights.tolist(),
            "lower": p.lower.tolist(),
            "width": p.width.tolist(),
            "log_density": p.log_density.tolist(),
            "floor": p.floor,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "LODA":
        """Rebuild a fitted detector from ``get_params()`` output."""
        det = cls(params["projections"], params["bins"], params["seed"], params["floor_count"])
        arr = {k: np.asarray(params[k], dtype=np.float64) for k in LODAParams.__annotations__}
        arr["floor"] = float(params["floor"])
        det.params = LODAParams(**arr)
        if det.params.log_density.shape != (det.projections, det.bins):
            raise ValueError(
                f"log_density has shape {det.params.log_density.shape}, expected "
                f"({det.projections}, {det.bins})"
            )
        return det


def _bin_index(values: np.ndarray, lower: float, width: float, bins: int) -> np.ndarray:
    # The maximum lands exactly on the right edge; it belongs to the last bin.
    return np.clip(np.floor((values - lower) / width), 0, bins - 1).astype(np.int64)
