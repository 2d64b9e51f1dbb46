"""Detection metrics in the shape of pytorch-ood's ``OODMetrics``.

Convention (the GGA paper's): trusted inputs (clean, in-distribution) are the *positives* and the
detector's outlier scores are higher for untrusted inputs. TNR@95TPR is the fraction of untrusted
inputs rejected when the threshold accepts 95% of the trusted ones. AUPR-In takes trusted inputs as
the positive class (ranked by ``-score``), AUPR-Out untrusted ones (ranked by ``score``).
"""

import math
from typing import Any, Self

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_curve

TPR_LEVEL = 0.95


def _as_1d(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a, dtype=np.float64).reshape(-1)
    if np.isnan(arr).any():
        raise ValueError(f"{name} holds NaN; score every input before computing metrics")
    return arr


def auroc(trusted: Any, untrusted: Any) -> float:
    """AUROC of outlier scores with untrusted inputs as the positive class (ties count half).

    The one AUROC of the project: the fit's criterion, the evaluation's tables and the analyses
    all call it. NaN when either side is empty (a kind with no input cannot be ranked).
    """
    pos = _as_1d(trusted, "trusted scores")
    neg = _as_1d(untrusted, "untrusted scores")
    n0, n1 = len(pos), len(neg)
    if n0 == 0 or n1 == 0:
        return float("nan")
    ranks = rankdata(np.r_[pos, neg])
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def tnr_at_tpr(trusted: Any, untrusted: Any, tpr: float = TPR_LEVEL) -> float:
    """Fraction of untrusted inputs rejected at the threshold that accepts ``tpr`` of trusted ones.

    The threshold ``t`` is the smallest trusted score with at least ``tpr`` of the trusted scores
    ``<= t`` (accepted); an untrusted input is rejected if its score is ``> t``. The one
    TNR-at-TPR of the project; "the share flagged at a false-alarm rate f" is ``tnr_at_tpr(clean,
    scores, 1 - f)``.

    Args:
        trusted: outlier scores of trusted inputs (positives).
        untrusted: outlier scores of untrusted inputs.
        tpr: the true-positive rate to hold.

    Returns:
        TNR in [0, 1].
    """
    pos = np.sort(_as_1d(trusted, "trusted scores"))
    neg = _as_1d(untrusted, "untrusted scores")
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("need at least one trusted and one untrusted score")
    threshold = pos[max(0, math.ceil(tpr * len(pos) - 1e-9) - 1)]
    return float(np.mean(neg > threshold))


class OODMetrics:
    """Accumulate (score, trusted?) pairs over batches, then ``compute()`` the metrics.

    ``update(scores, y)`` takes labels as pytorch-ood does: ``y >= 0`` marks a known (trusted)
    input, ``y < 0`` an untrusted one.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> Self:
        self._scores: list[np.ndarray] = []
        self._trusted: list[np.ndarray] = []
        return self

    def update(self, scores: Any, y: Any) -> Self:
        """Add a batch.

        Raises:
            ValueError: ``scores`` and ``y`` differ in length or ``scores`` holds NaN.
        """
        s = _as_1d(scores, "scores")
        labels = _as_1d(y, "labels")
        if s.shape != labels.shape:
            raise ValueError(f"scores {s.shape} and labels {labels.shape} differ in shape")
        self._scores.append(s)
        self._trusted.append(labels >= 0)
        return self

    def compute(self) -> dict[str, float]:
        """``{"AUROC", "AUPR-IN", "AUPR-OUT", "TNR95TPR", "FPR95TPR"}`` as fractions in [0, 1].

        ``FPR95TPR`` is pytorch-ood's name for ``1 - TNR95TPR`` (untrusted inputs accepted).

        Raises:
            ValueError: no trusted or no untrusted input was added.
        """
        s = np.concatenate(self._scores) if self._scores else np.empty(0)
        t = np.concatenate(self._trusted) if self._trusted else np.empty(0, dtype=bool)
        if t.all() or not t.any():
            raise ValueError("metrics need both trusted (y >= 0) and untrusted (y < 0) inputs")
        tnr = tnr_at_tpr(s[t], s[~t])
        return {
            "AUROC": auroc(s[t], s[~t]),
            "AUPR-IN": float(average_precision_score(t, -s)),
            "AUPR-OUT": float(average_precision_score(~t, s)),
            "TNR95TPR": tnr,
            "FPR95TPR": 1.0 - tnr,
        }


def roc_points(trusted: Any, untrusted: Any) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve with untrusted as positive: (false-alarm rate on trusted, detection rate)."""
    pos = _as_1d(trusted, "trusted scores")
    neg = _as_1d(untrusted, "untrusted scores")
    labels = np.r_[np.zeros(len(pos)), np.ones(len(neg))]
    fpr, tpr, _ = roc_curve(labels, np.r_[pos, neg])
    return fpr, tpr
