"""Fusing the views' p-values into one outlier score, which is then calibrated once more.

Each view's score becomes a conformal p-value against its own calibration inputs; a fusion turns
the p-values of the views it combines into one statistic (higher = less trustworthy); and that
statistic gets a conformal p-value of its own on a calibration split that neither the views nor
the fusion saw, so the false-alarm guarantee holds for the fused trust score itself whatever the
views' dependence. The fusions:

- ``fisher``: ``-2 sum log p`` (Fisher 1925): rewards inputs unusual in several views at once.
- ``cauchy``: ``mean tan((1/2 - p) pi)`` (Liu and Xie 2020): heavy-tailed, so one very small
  p-value dominates; robust to dependent views.
- ``tippett``: ``-log min p`` (Tippett 1931): the most surprised view decides.
- ``logistic``: a logistic regression on ``-log p``, trained on clean inputs against untrusted
  inputs the project makes from training images (the only supervised one).
- ``single``: one view's raw score (a detector.json of format 1: a single LODA).

All but ``logistic`` need no untrusted data.
"""

import abc
from typing import Any, ClassVar, Self

import numpy as np
from sklearn.linear_model import LogisticRegression

from detectors.base import DetectorFitError, NotFittedError

# A NaN view score gives p = 0, and a view's extrapolated tail (detectors.calibration) can give
# p-values far below 1e-12: clip at the smallest normal double so -log p stays finite (<= 708).
P_FLOOR = float(np.finfo(np.float64).tiny)


def surprise(p_values: np.ndarray) -> np.ndarray:
    """``-log p`` with p clipped to [P_FLOOR, 1]: how unusual each view finds each input."""
    return -np.log(np.clip(np.asarray(p_values, dtype=np.float64), P_FLOOR, 1.0))


class Fusion(abc.ABC):
    """One statistic from the p-values of ``views`` (N, V columns in that order).

    Args:
        views: the names of the views it combines, in column order.
    """

    kind: ClassVar[str]
    supervised: ClassVar[bool] = False

    def __init__(self, views: tuple[str, ...]) -> None:
        if not views:
            raise ValueError("a fusion needs at least one view")
        self.views = tuple(views)

    def fit(
        self,
        p_values: np.ndarray,
        labels: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> Self:
        """Fit on p-values (N, V) and labels (1 = untrusted); a no-op for fixed rules."""
        return self

    @abc.abstractmethod
    def statistic(self, p_values: np.ndarray) -> np.ndarray:
        """The fused outlier score (N,) of p-values (N, V); higher = less trustworthy."""

    def get_params(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "views": list(self.views), "params": self.get_params()}

    @classmethod
    def from_params(cls, views: tuple[str, ...], params: dict[str, Any]) -> "Fusion":
        return cls(views)


class FisherFusion(Fusion):
    kind = "fisher"

    def statistic(self, p_values: np.ndarray) -> np.ndarray:
        return 2.0 * surprise(p_values).sum(axis=1)


class CauchyFusion(Fusion):
    kind = "cauchy"

    def statistic(self, p_values: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(p_values, dtype=np.float64), P_FLOOR, 1.0)
        # tan((1/2 - p) pi) = 1 / tan(p pi), which keeps its precision for tiny p
        # (0.5 - p rounds to 0.5 below p = 1e-17).
        with np.errstate(divide="ignore", over="ignore"):
            return (1.0 / np.tan(p * np.pi)).mean(axis=1)


class TippettFusion(Fusion):
    kind = "tippett"

    def statistic(self, p_values: np.ndarray) -> np.ndarray:
        return surprise(p_values).max(axis=1)


class SingleFusion(Fusion):
    """One view's own score, unchanged (format-1 files: the view has no calibration of its own).

    ``statistic`` takes that view's raw scores (N, 1), not p-values.
    """

    kind = "single"

    def __init__(self, views: tuple[str, ...]) -> None:
        super().__init__(views)
        if len(self.views) != 1:
            raise ValueError(f"the single fusion takes one view, got {list(self.views)}")

    def statistic(self, p_values: np.ndarray) -> np.ndarray:
        return np.asarray(p_values, dtype=np.float64)[:, 0]


class LogisticFusion(Fusion):
    """Logistic regression on the views' ``-log p``: clean (0) against untrusted (1).

    Classes are weighted to balance, so the untrusted inputs' number does not set the prior;
    ``sample_weight`` can balance the kinds among them.

    Args:
        views: the views combined.
        c: inverse regularisation strength (scikit-learn's ``C``).
    """

    kind = "logistic"
    supervised = True

    def __init__(self, views: tuple[str, ...], c: float = 1.0) -> None:
        super().__init__(views)
        self.c = float(c)
        self.coef: np.ndarray | None = None
        self.intercept = 0.0

    def fit(
        self,
        p_values: np.ndarray,
        labels: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> Self:
        if labels is None:
            raise DetectorFitError("the logistic fusion is trained on labelled inputs")
        labels = np.asarray(labels)
        if len(np.unique(labels)) != 2:
            raise DetectorFitError(
                "the logistic fusion needs clean and untrusted inputs; no attack on the training "
                "images succeeded: use an unsupervised fusion (--fusion fisher)"
            )
        # Without weights, balance the classes; given weights already say what each row counts.
        balance = "balanced" if sample_weight is None else None
        model = LogisticRegression(C=self.c, class_weight=balance, max_iter=5000)
        model.fit(surprise(p_values), labels, sample_weight=sample_weight)
        self.coef = model.coef_[0].astype(np.float64)
        self.intercept = float(model.intercept_[0])
        return self

    def statistic(self, p_values: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise NotFittedError()
        return surprise(p_values) @ self.coef + self.intercept

    def get_params(self) -> dict[str, Any]:
        if self.coef is None:
            raise NotFittedError()
        return {"c": self.c, "coef": self.coef.tolist(), "intercept": self.intercept}

    @classmethod
    def from_params(cls, views: tuple[str, ...], params: dict[str, Any]) -> "Fusion":
        fusion = cls(views, params["c"])
        fusion.coef = np.asarray(params["coef"], dtype=np.float64)
        fusion.intercept = float(params["intercept"])
        if fusion.coef.shape != (len(views),):
            raise ValueError(f"{len(fusion.coef)} coefficients for {len(views)} views")
        return fusion


FUSIONS: dict[str, type[Fusion]] = {
    cls.kind: cls for cls in (FisherFusion, CauchyFusion, TippettFusion, LogisticFusion)
}
ALL_FUSIONS: dict[str, type[Fusion]] = {**FUSIONS, SingleFusion.kind: SingleFusion}


def fusion_from_dict(data: dict[str, Any]) -> Fusion:
    """Rebuild a fusion from ``Fusion.to_dict`` output.

    Raises:
        ValueError: unknown kind or malformed parameters.
    """
    kind = data.get("kind")
    if kind not in ALL_FUSIONS:
        raise ValueError(f"unknown fusion {kind!r}; known: {', '.join(ALL_FUSIONS)}")
    return ALL_FUSIONS[kind].from_params(tuple(data["views"]), data.get("params", {}))
