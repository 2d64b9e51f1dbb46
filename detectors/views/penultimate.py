"""Views of the penultimate features ``h`` (``models.penultimate``) from the engine's forward.

- ``mahalanobis``: class means and one tied covariance (Ledoit-Wolf shrunk) of ``h`` on clean
  training inputs; the score is the smallest squared Mahalanobis distance to a class mean
  (Lee et al. 2018, last layer, without their input preprocessing, which costs a backward and a
  second forward on the request path). Features wider than 256 are first projected on their
  leading principal components (``detectors.views.projection``).
- ``knn``: deep nearest neighbours (Sun et al. 2022): ``h`` normalised to unit length, the
  score is the distance to the k-th nearest of a bank of clean training features.
- ``gradnorm`` (Huang et al. 2021): the L1 norm of the gradient of KL(uniform || softmax(z))
  with respect to the last layer's weights W. For ``z = W h + b`` that gradient is
  ``(softmax(z) - 1/C) h^T``, so its L1 norm is ``|softmax(z) - 1/C|_1 * |h|_1``: exact, in
  closed form, with no backward pass at all. In-distribution inputs have larger norms, so the
  score is its negative.
"""

from typing import Any, Self

import numpy as np
import torch

from detectors.arrays import decode_array, encode_array, quantize
from detectors.base import DetectorFitError, as_features
from detectors.views.base import View, ViewInputs, fitted_view
from detectors.views.gaussian import ClassGaussian
from detectors.views.logits import softmax
from detectors.views.projection import Projection

# The bank of the k-NN view lives in detector.json: keep it to about a million float16 values
# (2 MB, 2.7 MB as base64) whatever the feature width.
KNN_BANK_VALUES = 1_000_000
KNN_BANK_MAX = 5_000


def _features(z: ViewInputs) -> np.ndarray:
    assert z.penultimate is not None  # checked by View._check_available
    return np.asarray(z.penultimate, dtype=np.float64)


class MahalanobisView(View):
    """Smallest squared Mahalanobis distance to a class mean, tied covariance."""

    name = "mahalanobis"
    title = "unfamiliar features"
    needs_penultimate = True

    def __init__(self) -> None:
        super().__init__()
        self.gaussian = ClassGaussian()

    # The fitted arrays, read by the adaptive attack's torch surrogate of this view.
    @property
    def projection(self) -> Projection:
        return self.gaussian.projection

    @property
    def means(self) -> np.ndarray | None:
        return self.gaussian.means

    @property
    def precision(self) -> np.ndarray | None:
        return self.gaussian.precision

    def _whitened(self) -> tuple[np.ndarray, np.ndarray]:
        return self.gaussian.whitened()

    def _fit(self, z: ViewInputs) -> None:
        self.gaussian = ClassGaussian.fit(
            _features(z), z.predicted, z.logits.shape[1], "penultimate features"
        )

    def _score(self, z: ViewInputs) -> np.ndarray:
        return self.gaussian.min_distance(_features(z))

    def get_params(self) -> dict[str, Any]:
        self._check_fitted()
        return self.gaussian.get_params()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        view = cls()
        view.gaussian = ClassGaussian.from_params(params)
        return fitted_view(view)


def kth_neighbour_distance(queries: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each unit-length query (N, F) to its ``k``-th nearest unit-length bank row.

    Unit vectors: ``|q - b|^2 = 2 - 2 q.b``, so the k nearest are the k largest dot products.
    """
    kth = (queries @ bank.T).topk(k, dim=1).values[:, -1]  # (N, M) -> (N,)
    return (2.0 - 2.0 * kth).clamp_min(0.0).sqrt()


def _normalise(h: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(h, axis=1, keepdims=True)
    return h / np.maximum(norm, 1e-12)


class KNNView(View):
    """Distance from the unit-length features to the k-th nearest training feature.

    Args:
        k: which neighbour (Sun et al. use 50 with all 50,000 CIFAR-10 training images and
            k = 1 with a 1% sample; our bank holds up to 5,000, hence 10).
        bank_size: most training features kept (fewer for wide features, see
            ``KNN_BANK_VALUES``); drawn with ``seed``.
        seed: seeds the draw of the bank.
    """

    name = "knn"
    title = "far from training images"
    needs_penultimate = True

    def __init__(self, k: int = 10, bank_size: int = KNN_BANK_MAX, seed: int = 0) -> None:
        super().__init__()
        if k < 1 or bank_size < 1:
            raise ValueError(f"k and bank_size must be positive, got {k}, {bank_size}")
        self.k = int(k)
        self.bank_size = int(bank_size)
        self.seed = int(seed)
        self.bank: np.ndarray | None = None  # (M, F) unit rows, float16 values

    def _fit(self, z: ViewInputs) -> None:
        h = as_features(_features(z), "penultimate features")
        size = min(len(h), self.bank_size, max(1, KNN_BANK_VALUES // h.shape[1]))
        if size < self.k + 1:
            raise DetectorFitError(
                f"the knn view needs more than k = {self.k} fitting inputs, got {len(h)}"
            )
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(rng.choice(len(h), size=size, replace=False))
        self.bank = quantize(_normalise(h[chosen]), "float16").astype(np.float32)

    def _score(self, z: ViewInputs) -> np.ndarray:
        assert self.bank is not None
        # float32: the bank holds float16 values, and float64 doubled the product's cost.
        queries = torch.from_numpy(_normalise(_features(z)).astype(np.float32))
        bank = torch.from_numpy(np.ascontiguousarray(self.bank, dtype=np.float32))
        return kth_neighbour_distance(queries, bank, self.k).numpy()

    def get_params(self) -> dict[str, Any]:
        self._check_fitted()
        assert self.bank is not None
        return {
            "k": self.k,
            "bank_size": self.bank_size,
            "seed": self.seed,
            "bank": encode_array(self.bank, "float16"),
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        view = cls(params["k"], params["bank_size"], params["seed"])
        view.bank = decode_array(params["bank"]).astype(np.float32)
        if view.bank.ndim != 2 or len(view.bank) <= view.k - 1:
            raise ValueError(f"a bank of shape {view.bank.shape} cannot serve k = {view.k}")
        return fitted_view(view)


class GradNormView(View):
    """Minus the L1 norm of the last layer's weight gradient of KL(uniform || softmax)."""

    name = "gradnorm"
    title = "gradient norm"
    needs_penultimate = True

    def _fit(self, z: ViewInputs) -> None:
        pass  # a fixed function of the logits and features

    def _score(self, z: ViewInputs) -> np.ndarray:
        logits = np.asarray(z.logits, dtype=np.float64)
        p = softmax(logits)
        dz = np.abs(p - 1.0 / logits.shape[1]).sum(axis=1)
        return -(dz * np.abs(_features(z)).sum(axis=1))

    def get_params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        return fitted_view(cls())
