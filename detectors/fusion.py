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
- ``clean-knn``: how far the input's vector of surprises ``-log p`` lies beyond the clean
  inputs' vectors: the k-th smallest one-sided distance ``max_v (s_v - b_v)+`` to a bank of
  clean vectors b. A density of clean inputs in p-value space: it learns which views agree on
  clean inputs, and it never lowers the statistic when one view's p-value falls (issue 23).
- ``guarded``: the free scores (max softmax, energy) guard the rest. The other views are fused
  by Fisher; that statistic becomes a p-value against clean inputs, and the result is the most
  surprised of it, the max softmax and the energy (Tippett over three). An input one of the
  free scores catches is caught at a slightly stricter threshold than alone.
- ``single``: one view's raw score (a detector.json of format 1: a single LODA).

All but ``logistic`` need no untrusted data; ``clean-knn`` and ``guarded`` learn from clean
inputs (``fits_clean``).
"""

import abc
from typing import Any, ClassVar, Self

import numpy as np
from sklearn.linear_model import LogisticRegression

from detectors.arrays import decode_array, encode_array, quantize
from detectors.base import DetectorFitError, NotFittedError
from detectors.calibration import ConformalCalibrator

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
    # Learns from clean inputs' p-values (fit's rows with label 0, or every row without labels).
    fits_clean: ClassVar[bool] = False
    # Views every subset it fuses must hold, where the model has them.
    required: ClassVar[tuple[str, ...]] = ()

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


def _clean_rows(p_values: np.ndarray, labels: np.ndarray | None, what: str) -> np.ndarray:
    """The rows of clean inputs (label 0, or all without labels), at least 2 of them.

    Few rows make a coarse fusion, not a wrong one: the final calibration of the fused score
    keeps its false-alarm promise whatever the fusion learnt.
    """
    p = np.asarray(p_values, dtype=np.float64)
    clean = p if labels is None else p[np.asarray(labels) == 0]
    if len(clean) < 2:
        raise DetectorFitError(f"the {what} fusion needs 2 clean inputs at least, got {len(clean)}")
    return clean


class CleanKNNFusion(Fusion):
    """The k-th smallest one-sided distance from the surprise vector to clean ones.

    The distance to a clean input b is ``max_v (s_v - b_v)+``: by how much the input is more
    surprising than b in the view where it is most so. So the statistic is how much surprise
    the input would have to shed, in every view, before k clean inputs were at least as
    surprising everywhere. An input dominated by k clean inputs scores 0, and raising any
    view's surprise never lowers the statistic.

    The maximum, not the Euclidean sum, keeps a single view's strength. On uniform p-values of
    9 views against banks of 500 (tests/detectors/test_fusion.py measures it), at 5% false
    alarms: an input with one p-value at 1/1001 is caught every time (Euclidean distance: 77%,
    Fisher: 51%), and inputs moderately unusual in every view (p below 0.2) 65% of the time
    (Fisher: always, Cauchy: 38%, Tippett: 24%).

    Args:
        views: the views combined.
        k: which neighbour. Over 8 banks of 500, k = 10 caught the single extreme p-value in
            every draw; k = 5 in 67-100% of draws, k = 1 in 45-75%; larger k blunts the broad
            case (k = 20: 52%).
    """

    kind = "clean-knn"
    fits_clean = True

    def __init__(self, views: tuple[str, ...], k: int = 10) -> None:
        super().__init__(views)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = int(k)
        self.bank: np.ndarray | None = None  # (M, V) surprises of clean inputs

    def fit(
        self,
        p_values: np.ndarray,
        labels: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> Self:
        clean = _clean_rows(p_values, labels, self.kind)
        self.bank = quantize(surprise(clean), "float32")
        return self

    def statistic(self, p_values: np.ndarray) -> np.ndarray:
        if self.bank is None:
            raise NotFittedError()
        s = surprise(p_values)
        k = min(self.k, len(self.bank))
        out = np.empty(len(s))
        for start in range(0, len(s), 256):  # (256, M, V) at a time: a few MB
            beyond = s[start : start + 256, None, :] - self.bank[None]
            distance = np.clip(beyond.max(axis=2), 0.0, None)
            out[start : start + 256] = np.partition(distance, k - 1, axis=1)[:, k - 1]
        return out

    def get_params(self) -> dict[str, Any]:
        if self.bank is None:
            raise NotFittedError()
        return {"k": self.k, "bank": encode_array(self.bank, "float32")}

    @classmethod
    def from_params(cls, views: tuple[str, ...], params: dict[str, Any]) -> "Fusion":
        fusion = cls(views, params["k"])
        fusion.bank = decode_array(params["bank"]).astype(np.float64)
        if fusion.bank.ndim != 2 or fusion.bank.shape[1] != len(views):
            raise ValueError(f"a bank of shape {fusion.bank.shape} for {len(views)} views")
        return fusion


class GuardedFusion(Fusion):
    """Tippett over the free scores' p-values and the Fisher p-value of the other views.

    Args:
        views: the views combined; those in ``GUARDS`` guard, the rest are fused by Fisher.
    """

    kind = "guarded"
    fits_clean = True
    GUARDS: ClassVar[tuple[str, ...]] = ("msp", "energy")
    required = GUARDS

    def __init__(self, views: tuple[str, ...]) -> None:
        super().__init__(views)
        self.guards = [i for i, v in enumerate(self.views) if v in self.GUARDS]
        self.others = [i for i, v in enumerate(self.views) if v not in self.GUARDS]
        self.reference: ConformalCalibrator | None = None  # Fisher of the others, on clean

    def fit(
        self,
        p_values: np.ndarray,
        labels: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> Self:
        if self.others:
            clean = _clean_rows(p_values, labels, self.kind)
            # The exponential tail keeps ranking inputs past every clean one (AUROC, adaptive
            # attacks), where a floored p-value would tie them.
            self.reference = ConformalCalibrator(self._fisher(clean), tail="exponential")
        return self

    def _fisher(self, p_values: np.ndarray) -> np.ndarray:
        return 2.0 * surprise(np.asarray(p_values)[:, self.others]).sum(axis=1)

    def statistic(self, p_values: np.ndarray) -> np.ndarray:
        p = np.asarray(p_values, dtype=np.float64)
        columns = [p[:, self.guards]]
        if self.others:
            if self.reference is None:
                raise NotFittedError()
            columns.append(self.reference.trust(self._fisher(p))[:, None])
        return surprise(np.concatenate(columns, axis=1)).max(axis=1)

    def get_params(self) -> dict[str, Any]:
        if self.others and self.reference is None:
            raise NotFittedError()
        return {"reference": None if self.reference is None else self.reference.to_dict()}

    @classmethod
    def from_params(cls, views: tuple[str, ...], params: dict[str, Any]) -> "Fusion":
        fusion = cls(views)
        if params.get("reference") is not None:
            fusion.reference = ConformalCalibrator.from_dict(params["reference"])
        elif fusion.others:
            raise ValueError("a guarded fusion of other views needs their clean reference")
        return fusion


FUSIONS: dict[str, type[Fusion]] = {
    cls.kind: cls
    for cls in (
        FisherFusion,
        CauchyFusion,
        TippettFusion,
        LogisticFusion,
        CleanKNNFusion,
        GuardedFusion,
    )
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
