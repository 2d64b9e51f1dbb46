"""Maximum softmax probability (Hendrycks and Gimpel 2017)."""

from torch import Tensor

from gga_lab.baselines.common import LogitScore


class MaxSoftmax(LogitScore):
    """Outlier score ``-max_c softmax(z)_c``; higher = less trustworthy. Nothing to fit."""

    kind = "msp"

    def score_logits(self, logits: Tensor) -> Tensor:
        return -logits.softmax(dim=1).amax(dim=1)
