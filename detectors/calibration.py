"""Conformal calibration: an outlier score becomes a p-value, the trust score users act on.

On a held-out calibration set of clean, correctly classified inputs (never used for fitting),
``trust(s) = (1 + #{calibration scores >= s}) / (n + 1)``, a number in (0, 1]. If a new clean
input is exchangeable with the calibration inputs, ``P(trust <= alpha) <= alpha``, so flagging
``trust < alpha`` raises false alarms on clean inputs at a rate of about alpha, by construction.

The conformal p-value cannot go below ``1 / (n + 1)``: an input just beyond the largest
calibration score and one a hundred times further get the same p-value. A view's p-value feeds
a fusion, and there that floor matters: the smallest p-value of several views reaches it on
ordinary clean inputs, so a view that sees an input as extreme cannot say so. With
``tail="exponential"`` a score beyond the calibration maximum gets
``exp(-(s - max) / scale) / (n + 1)``, where ``scale`` is the mean excess of the largest
calibration scores over the score below them (the maximum-likelihood exponential tail of a
peaks-over-threshold fit). Within the calibration range the p-value is the conformal one,
unchanged, so the guarantee above holds for every ``alpha >= 1 / (n + 1)``. The trust score
itself keeps the plain conformal p-value.
"""

from typing import Any

import numpy as np

from detectors.base import DetectorFitError, as_features

MIN_CALIBRATION = 20  # below this the smallest reachable p-value, 1/(n+1), exceeds alpha = 0.05
DEFAULT_ALPHA = 0.05
TAILS: tuple[str, ...] = ("none", "exponential")
TAIL_FRACTION = 0.05  # the top 5% of calibration scores estimate the tail's scale ...
MIN_TAIL = 10  # ... and at least this many


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise ``ValueError`` unless it lies in (0, 1)."""
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), e.g. 0.05; got {alpha}")
    return float(alpha)


def exponential_tail_scale(sorted_scores: np.ndarray) -> float:
    """Mean excess of the top ``max(MIN_TAIL, 5%)`` scores over the next one (0 if all tie)."""
    n = len(sorted_scores)
    k = min(n - 1, max(MIN_TAIL, int(np.ceil(TAIL_FRACTION * n))))
    threshold = sorted_scores[n - k - 1]
    return float(np.mean(sorted_scores[n - k :] - threshold))


class ConformalCalibrator:
    """Conformal p-values against sorted calibration scores.

    Args:
        scores: outlier scores (n,) of the calibration inputs, any order.
        tail: ``"none"`` (p-values floor at ``1/(n+1)``) or ``"exponential"`` (scores beyond
            the calibration maximum get smaller p-values, see the module's docstring).

    Raises:
        DetectorFitError: fewer than ``MIN_CALIBRATION`` scores, or a NaN/infinite score.
        ValueError: an unknown ``tail``.
    """

    def __init__(self, scores: Any, tail: str = "none") -> None:
        if tail not in TAILS:
            raise ValueError(f"tail must be one of {', '.join(TAILS)}, got {tail!r}")
        arr = as_features(np.asarray(scores, dtype=np.float64).reshape(-1, 1), "calibration scores")
        if len(arr) < MIN_CALIBRATION:
            raise DetectorFitError(
                f"calibration needs at least {MIN_CALIBRATION} clean, correctly classified "
                f"inputs, got {len(arr)}; raise --n-cal"
            )
        self.sorted_scores = np.sort(arr[:, 0])
        self.tail = tail
        # All calibration scores tied at the top: no scale to extrapolate with.
        self.tail_scale = exponential_tail_scale(self.sorted_scores) if tail != "none" else 0.0

    @property
    def n(self) -> int:
        return len(self.sorted_scores)

    def trust(self, scores: Any) -> np.ndarray:
        """P-values (N,) in (0, 1] of outlier ``scores`` (N,); lower = less trusted.

        NaN scores get trust 0 (they cannot be trusted, and must not pass silently).
        """
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        # #{cal >= s} = n - #{cal < s}; searchsorted(side="left") counts cal < s.
        at_least = self.n - np.searchsorted(self.sorted_scores, s, side="left")
        trust = (1.0 + at_least) / (self.n + 1.0)
        if self.tail_scale > 0:
            beyond = s > self.sorted_scores[-1]
            excess = np.where(beyond, s - self.sorted_scores[-1], 0.0) / self.tail_scale
            trust = np.where(beyond, np.exp(-excess) / (self.n + 1.0), trust)
        return np.where(np.isnan(s), 0.0, trust)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"n": self.n, "sorted_scores": self.sorted_scores.tolist()}
        if self.tail != "none":
            data["tail"] = {"kind": self.tail, "scale": self.tail_scale}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConformalCalibrator":
        """Rebuild from ``to_dict`` output; files without ``tail`` have none."""
        return cls(data["sorted_scores"], tail=data.get("tail", {}).get("kind", "none"))
