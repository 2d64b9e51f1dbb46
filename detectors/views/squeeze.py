"""The view of prediction stability under feature squeezing (Xu et al., NDSS 2018).

For each squeezer (``detectors.squeeze.SQUEEZERS``: bit depth, a 2 x 2 median, a slight blur) how
much probability the predicted class loses on the squeezed copy, ``log p(c | x) - log p(c |
squeeze(x))`` for the class c predicted on x. Each is divided by its 95th percentile on clean,
correctly classified fit inputs, and the score is the largest of these ratios: the scale makes a
squeezer that moves clean inputs a lot count as little as one that never does, so no squeezer is
chosen by hand per data set. Higher = less trusted.

Xu et al. compare the softmax vectors by their L1 distance, which saturates at 2: on
Fashion-MNIST, where 1-bit depth already moves many clean inputs far, it left no room above the
clean scale. The log-probability drop is unbounded; measured on 300 test images and full-budget
PGD l_inf (TNR at 95% TPR, 1-bit depth alone): 95% on mnist-cnn, 93% on mnist-lenet-low, 50% on
fashion-mnist-cnn, against 93%, 89% and 56% for the L1 distance.
"""

from typing import Any, ClassVar, Self

import numpy as np

from detectors.base import DetectorFitError
from detectors.squeeze import SQUEEZERS
from detectors.views.base import View, ViewInputs, fitted_view
from detectors.views.logits import logsumexp

QUANTILE = 0.95
# A squeezer that never moves a clean input still divides by something: a log-probability drop
# below this is float noise.
MIN_SCALE = 1e-6


def squeeze_distances(logits: np.ndarray, squeezed: np.ndarray) -> np.ndarray:
    """How much log-probability the predicted class loses on each squeezed copy.

    Args:
        logits: (N, C).
        squeezed: (N, S, C) logits of the copies.

    Returns:
        (N, S) ``log p(c | x) - log p(c | copy)``, c the class predicted on x; negative where
        squeezing made the prediction surer.
    """
    z = np.asarray(logits, dtype=np.float64)
    s = np.asarray(squeezed, dtype=np.float64)
    predicted = z.argmax(axis=1)
    rows = np.arange(len(z))
    own = z[rows, predicted] - logsumexp(z)  # (N,)
    copies = s[rows, :, predicted] - logsumexp(s.reshape(-1, s.shape[-1])).reshape(s.shape[:2])
    return own[:, None] - copies


class SqueezeView(View):
    name = "squeeze"
    title = "prediction stability"
    needs_squeezed: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.squeezers: tuple[str, ...] = tuple(SQUEEZERS)
        self.scale: np.ndarray | None = None

    def _fit(self, z: ViewInputs) -> None:
        distances = squeeze_distances(z.logits, z.squeezed)
        if len(distances) < 2 or not np.isfinite(distances).all():
            raise DetectorFitError("the squeeze view needs at least 2 finite fit inputs")
        self.scale = np.maximum(np.quantile(distances, QUANTILE, axis=0), MIN_SCALE)

    def _score(self, z: ViewInputs) -> np.ndarray:
        return (squeeze_distances(z.logits, z.squeezed) / self.scale).max(axis=1)

    def get_params(self) -> dict[str, Any]:
        return {"squeezers": list(self.squeezers), "scale": self.scale.tolist()}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        view = cls()
        if list(params["squeezers"]) != list(SQUEEZERS):
            raise ValueError(
                f"fitted with squeezers {params['squeezers']}, this engine has {list(SQUEEZERS)}"
            )
        view.scale = np.asarray(params["scale"], dtype=np.float64)
        return fitted_view(view)
