"""A supervised alternative to LODA: logistic regression on standardised GGA features.

For users who have attack data: fitted on clean (label 0) versus adversarial (label 1) features,
e.g. FGSM/PGD inputs of the training split. Persisted as coefficients, never pickled.
"""

from typing import Any, Self

import numpy as np
from sklearn.linear_model import LogisticRegression

from detectors.base import Detector, DetectorFitError, as_features

MIN_PER_CLASS = 10


class LogisticDetector(Detector):
    """Outlier score = logit of "untrusted", ``w . (z - mean) / scale + b``; higher = less trust.

    Args:
        c: inverse L2 regularisation strength of scikit-learn's ``LogisticRegression``.
        max_iter: solver iterations.
    """

    kind = "logistic"

    def __init__(self, c: float = 1.0, max_iter: int = 1000) -> None:
        self.c = float(c)
        self.max_iter = int(max_iter)
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.coef: np.ndarray | None = None
        self.intercept: float = 0.0

    @property
    def fitted(self) -> bool:
        return self.coef is not None

    def fit_features(self, z: Any, y: Any = None) -> Self:
        """Fit on features ``z`` (N, D) with ``y`` (N,): 0 = clean, 1 = adversarial.

        Raises:
            DetectorFitError: no labels, labels other than 0/1, fewer than ``MIN_PER_CLASS`` of
                either class, or NaN features.
        """
        z = as_features(z)
        if y is None:
            raise DetectorFitError(
                "the logistic detector is supervised: pass y (0 clean, 1 adversarial), or use "
                "--detector loda, which needs clean inputs only"
            )
        y = np.asarray(y).reshape(-1).astype(np.int64)
        if y.shape != (len(z),) or not np.isin(y, (0, 1)).all():
            raise DetectorFitError("y must hold one 0 (clean) or 1 (adversarial) per row of z")
        counts = np.bincount(y, minlength=2)
        if counts.min() < MIN_PER_CLASS:
            raise DetectorFitError(
                f"the logistic detector needs at least {MIN_PER_CLASS} clean and "
                f"{MIN_PER_CLASS} adversarial inputs, got {counts[0]} and {counts[1]}"
            )
        mean = z.mean(axis=0)
        scale = z.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        model = LogisticRegression(C=self.c, max_iter=self.max_iter)
        model.fit((z - mean) / scale, y)
        self.mean, self.scale = mean, scale
        self.coef = model.coef_[0].astype(np.float64)
        self.intercept = float(model.intercept_[0])
        return self

    def predict_features(self, z: Any) -> np.ndarray:
        self._check_fitted()
        z = as_features(z)
        return ((z - self.mean) / self.scale) @ self.coef + self.intercept

    def get_params(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "c": self.c,
            "max_iter": self.max_iter,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "LogisticDetector":
        det = cls(params["c"], params["max_iter"])
        det.mean = np.asarray(params["mean"], dtype=np.float64)
        det.scale = np.asarray(params["scale"], dtype=np.float64)
        det.coef = np.asarray(params["coef"], dtype=np.float64)
        det.intercept = float(params["intercept"])
        return det
