"""``gga fit``'s choice of how many classes to read, by what each number detects and costs.

The ceiling comes from the engine's cost on this machine (``detectors.row_cost``). Under it,
fewer rows cost less but may see less: the fit computes every input once at the ceiling and, for
each candidate N (10, 20, 40, ... and the ceiling itself), takes the leading N x N block of each
CSM (``ViewInputs.leading_rows``: exactly what an engine reading N rows gives), fits the two
views of the gradient geometry (``gga-paper`` and ``gga-csm``) on the fit part and measures the
AUROC of the tune part's clean inputs against each untrusted kind made from them. The smallest N
within ``TOLERANCE`` of the best mean AUROC is chosen: it detects as well and costs least. The
other views read the logits and features, which do not depend on N.
"""

import logging
from dataclasses import dataclass

import numpy as np

from detectors.base import DetectorFitError
from detectors.row_cost import MIN_ROWS
from detectors.views.base import ViewInputs
from detectors.views.gga import GGACSMView, GGAPaperView
from gga_lab.metrics import auroc

logger = logging.getLogger(__name__)

TOLERANCE = 0.01  # mean AUROC a smaller N may lose against the best and still be chosen


@dataclass(frozen=True)
class TopNChoice:
    """The N chosen and the mean AUROC measured at each candidate."""

    top_n: int
    ceiling: int
    measured: dict[int, float]

    def to_dict(self) -> dict[str, object]:
        return {
            "chosen": self.top_n,
            "ceiling": self.ceiling,
            "criterion": "mean AUROC of gga-paper and gga-csm, clean tune inputs against each "
            f"untrusted kind; the smallest N within {TOLERANCE} of the best",
            "measured": {str(n): round(v, 4) for n, v in self.measured.items()},
        }


def candidates(ceiling: int) -> list[int]:
    """10, 20, 40, ... below ``ceiling``, then ``ceiling``."""
    found, n = [], MIN_ROWS
    while n < ceiling:
        found.append(n)
        n *= 2
    return [*found, ceiling]


def _auroc(clean: np.ndarray, untrusted: np.ndarray) -> float:
    """AUROC of outlier scores (higher = less trusted); an undefined score is the least trusted."""
    worst = np.finfo(float).max
    return auroc(*(np.where(np.isfinite(s), s, worst) for s in (clean, untrusted)))


def _mean_auroc(
    n: int, fit: ViewInputs, tune: ViewInputs, untrusted: dict[str, ViewInputs], seed: int
) -> float:
    fit_n, tune_n = fit.leading_rows(n), tune.leading_rows(n)
    results = []
    for view in (GGAPaperView(seed=seed), GGACSMView()):
        view.fit_features(fit_n)
        clean = view.predict_features(tune_n)
        for inputs in untrusted.values():
            results.append(_auroc(clean, view.predict_features(inputs.leading_rows(n))))
    return float(np.mean(results))


def choose_top_n(
    ceiling: int,
    fit: ViewInputs,
    tune: ViewInputs,
    untrusted: dict[str, ViewInputs],
    *,
    seed: int = 0,
) -> TopNChoice:
    """The N to read (module docstring), from inputs computed at ``ceiling`` rows.

    Args:
        ceiling: the rows the inputs were computed with (the most affordable).
        fit: clean, correctly classified fit inputs.
        tune: clean, correctly classified tune inputs.
        untrusted: kind -> its inputs, made from the tune images.
        seed: seeds the LODA projections.

    Raises:
        DetectorFitError: no untrusted input to measure with.
    """
    untrusted = {k: v for k, v in untrusted.items() if len(v)}
    if not untrusted:
        raise DetectorFitError("no untrusted inputs to choose the number of classes read with")
    measured = {}
    for n in candidates(ceiling):
        measured[n] = _mean_auroc(n, fit, tune, untrusted, seed)
        logger.info("fit: top %d classes: mean AUROC %.4f", n, measured[n])
    best = max(measured.values())
    chosen = min(n for n, v in measured.items() if v >= best - TOLERANCE)
    return TopNChoice(chosen, ceiling, measured)
