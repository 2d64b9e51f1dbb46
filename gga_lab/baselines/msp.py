"""Maximum softmax probability (Hendrycks and Gimpel 2017), the ``msp`` view's maths."""

import numpy as np

from detectors.views.logits import msp_score
from gga_lab.baselines.common import LogitScore


class MaxSoftmax(LogitScore):
    """Outlier score ``-max_c softmax(z)_c``; higher = less trustworthy. Nothing to fit."""

    kind = "msp"

    def score_logits(self, logits: np.ndarray) -> np.ndarray:
        return msp_score(logits)
