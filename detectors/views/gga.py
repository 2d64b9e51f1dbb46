"""The two views of GGA's geometry: the paper's ten features, and the whole CSM.

- ``gga-paper``: LODA on the ten features (Schwinn et al.), kept as the comparison with the
  paper.
- ``gga-csm``: a Gaussian per predicted class on every off-diagonal entry of the CSM (45 for ten
  classes), Ledoit-Wolf shrunk; the score is the squared Mahalanobis distance to the predicted
  class's Gaussian. With more than ``MAX_PER_CLASS_COVARIANCES`` classes the classes share one
  covariance (per-class means stay), and more than 256 entries (K > 23 rows) are first
  projected on their leading principal components: a thousand-class model's CSM has half a
  million entries. The ten summary statistics average away which class pairs agree; measured in
  docs/results.md (point 8), the whole matrix separates more of what GGA sees.
"""

from typing import Any, Self

import numpy as np
from sklearn.covariance import LedoitWolf

from detectors.arrays import decode_array, encode_array, quantize
from detectors.base import Detector, DetectorFitError, as_features
from detectors.loda import LODA
from detectors.logistic import LogisticDetector
from detectors.views.base import View, ViewInputs, fitted_view
from detectors.views.projection import Projection

MIN_PER_CLASS = 20  # fewer fitting inputs of a class than this: that class uses the pooled fit
MAX_PER_CLASS_COVARIANCES = 20  # more classes than this share one covariance (file size)
# Detectors on the ten features; "logistic" only comes from format-1 files (``gga fit
# --detector logistic`` of earlier releases), which still load.
FEATURE_DETECTORS: dict[str, type[Detector]] = {"loda": LODA, "logistic": LogisticDetector}


class GGAPaperView(View):
    """LODA on the ten GGA features.

    Args:
        projections: LODA projections (the paper: 100).
        bins: histogram bins (the paper: 100 grey, 500 colour).
        seed: seeds the projections.
        detector: an already fitted detector on the ten features instead (format-1 files).
    """

    name = "gga-paper"
    title = "GGA features (the paper's detector)"

    def __init__(
        self,
        projections: int = 100,
        bins: int = 100,
        seed: int = 0,
        detector: Detector | None = None,
    ) -> None:
        super().__init__()
        self.detector = detector or LODA(projections=projections, bins=bins, seed=seed)
        self._fitted = self.detector.fitted

    def _fit(self, z: ViewInputs) -> None:
        self.detector.fit_features(z.gga)

    def _score(self, z: ViewInputs) -> np.ndarray:
        return _rowwise_finite(z.gga, self.detector.predict_features)

    def get_params(self) -> dict[str, Any]:
        return {"detector": {"kind": self.detector.kind, "params": self.detector.get_params()}}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        kind = params["detector"]["kind"]
        if kind not in FEATURE_DETECTORS:
            raise ValueError(f"unknown detector {kind!r}; known: {', '.join(FEATURE_DETECTORS)}")
        detector = FEATURE_DETECTORS[kind].from_params(params["detector"]["params"])
        return fitted_view(cls(detector=detector))


def csm_entries(csm: np.ndarray) -> np.ndarray:
    """The off-diagonal upper triangle of each CSM, rows in CSM order: (N, K(K-1)/2)."""
    rows, cols = np.triu_indices(csm.shape[1], 1)
    return np.asarray(csm, dtype=np.float64)[:, rows, cols]


class GGACSMView(View):
    """A Ledoit-Wolf Gaussian per predicted class on the CSM's off-diagonal entries."""

    name = "gga-csm"
    title = "gradient geometry"

    def __init__(self) -> None:
        super().__init__()
        self.projection = Projection()
        self.means: np.ndarray | None = None  # (C, D)
        self.precisions: np.ndarray | None = None  # (C, D, D), or (1, D, D) shared

    def _fit(self, z: ViewInputs) -> None:
        entries = as_features(csm_entries(z.csm), "CSM entries")
        num_classes = z.logits.shape[1]
        if len(entries) < MIN_PER_CLASS:
            raise DetectorFitError(
                f"the gga-csm view needs at least {MIN_PER_CLASS} inputs, got {len(entries)}; "
                "raise --n-fit"
            )
        self.projection = Projection.fit(entries)
        entries = self.projection(entries)
        pooled = LedoitWolf().fit(entries)
        means = np.repeat(pooled.location_[None], num_classes, axis=0)
        per_class = num_classes <= MAX_PER_CLASS_COVARIANCES
        precisions = np.repeat(pooled.precision_[None], num_classes if per_class else 1, axis=0)
        for c in range(num_classes):
            own = entries[z.predicted == c]
            if len(own) >= MIN_PER_CLASS:
                if per_class:
                    fit = LedoitWolf().fit(own)
                    means[c], precisions[c] = fit.location_, fit.precision_
                else:
                    means[c] = own.mean(axis=0)
        self.means = quantize(means, "float64")
        self.precisions = quantize(precisions, "float64")

    def _score(self, z: ViewInputs) -> np.ndarray:
        assert self.means is not None and self.precisions is not None
        e = self.projection(csm_entries(z.csm)) - self.means[z.predicted]  # (N, D)
        shared = len(self.precisions) == 1
        precision = self.precisions[np.zeros_like(z.predicted) if shared else z.predicted]
        return np.einsum("nd,nde,ne->n", e, precision, e)

    def get_params(self) -> dict[str, Any]:
        self._check_fitted()
        assert self.means is not None and self.precisions is not None
        return {
            "projection": self.projection.get_params(),
            "means": encode_array(self.means, "float64"),
            "precisions": encode_array(self.precisions, "float64"),
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        view = cls()
        view.projection = Projection.from_params(params.get("projection"))
        view.means = decode_array(params["means"]).astype(np.float64)
        view.precisions = decode_array(params["precisions"]).astype(np.float64)
        dim = view.means.shape[1]
        if view.precisions.shape[1:] != (dim, dim) or len(view.precisions) not in (
            1,
            len(view.means),
        ):
            raise ValueError(
                f"precisions of shape {view.precisions.shape} do not fit means {view.means.shape}"
            )
        return fitted_view(view)


def _rowwise_finite(values: np.ndarray, score: Any) -> np.ndarray:
    """``score`` of the finite rows of ``values``; NaN for the others (never trusted)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values).all(axis=1)
    out = np.full(len(values), np.nan)
    if finite.any():
        out[finite] = score(values[finite])
    return out
