"""Conformal calibration: an outlier score becomes a p-value, the trust score users act on.

On a held-out calibration set of clean, correctly classified inputs (never used for fitting),
``trust(s) = (1 + #{calibration scores >= s}) / (n + 1)``, a number in (0, 1]. If a new clean
input is exchangeable with the calibration inputs, ``P(trust <= alpha) <= alpha``, so flagging
``trust < alpha`` raises false alarms on clean inputs at a rate of about alpha, by construction.
"""

from typing import Any

import numpy as np

from detectors.base import DetectorFitError, as_features

MIN_CALIBRATION = 20  # below this the smallest reachable p-value, 1/(n+1), exceeds alpha = 0.05
DEFAULT_ALPHA = 0.05


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise ``ValueError`` unless it lies in (0, 1)."""
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), e.g. 0.05; got {alpha}")
    return float(alpha)


class ConformalCalibrator:
    """Conformal p-values against sorted calibration scores.

    Args:
        scores: outlier scores (n,) of the calibration inputs, any order.

    Raises:
        DetectorFitError: fewer than ``MIN_CALIBRATION`` scores, or a NaN/infinite score.
    """

    def __init__(self, scores: Any) -> None:
        arr = as_features(np.asarray(scores, dtype=np.float64).reshape(-1, 1), "calibration scores")
        if len(arr) < MIN_CALIBRATION:
            raise DetectorFitError(
                f"calibration needs at least {MIN_CALIBRATION} clean, correctly classified "
                f"inputs, got {len(arr)}; raise --n-cal"
            )
        self.sorted_scores = np.sort(arr[:, 0])

    @property
    def n(self) -> int:
        return len(self.sorted_scores)

    def trust(self, scores: Any) -> np.ndarray:
        """Conformal p-values (N,) in (0, 1] of outlier ``scores`` (N,); lower = less trusted.

        NaN scores get trust 0 (they cannot be trusted, and must not pass silently).
        """
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        # #{cal >= s} = n - #{cal < s}; searchsorted(side="left") counts cal < s.
        at_least = self.n - np.searchsorted(self.sorted_scores, s, side="left")
        trust = (1.0 + at_least) / (self.n + 1.0)
        return np.where(np.isnan(s), 0.0, trust)


def flagged(trust: Any, alpha: float) -> np.ndarray:
    """Boolean (N,): ``trust < alpha``."""
    return np.asarray(trust, dtype=np.float64) < check_alpha(alpha)
