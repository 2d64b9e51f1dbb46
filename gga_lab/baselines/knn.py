"""Deep nearest neighbours (Sun et al. 2022) on the penultimate features ``model.embed(x)``."""

from typing import Any, Self

import numpy as np
import torch
from torch import nn

from detectors.base import as_features
from detectors.views.penultimate import kth_neighbour_distance
from gga_lab.baselines.common import ModelDetector, as_inputs, batched


class KNN(ModelDetector):
    """Outlier score = distance of the unit-length features to the k-th nearest training feature.

    The ``knn`` view's distance (``kth_neighbour_distance``), but every fitting input is kept at
    full precision (the view keeps a capped float16 bank instead, to fit in ``detector.json``).

    Args:
        model: classifier on [0, 1] pixels with ``embed(x)``.
        k: which neighbour (Sun et al.: 50 with all 50,000 CIFAR-10 training images; with a
            5,000-image bank, 10).
        batch_size: inputs per forward pass.

    Raises:
        TypeError: the model has no ``embed`` method.
    """

    kind = "knn"

    def __init__(self, model: nn.Module, k: int = 10, batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        if not callable(getattr(model, "embed", None)):
            raise TypeError(f"{type(model).__name__} has no embed(x) giving penultimate features")
        self.k = int(k)
        self.bank: torch.Tensor | None = None

    def fit(self, x: Any, y: Any = None) -> Self:
        with torch.no_grad():
            return self.fit_features(batched(self.model.embed, as_inputs(x), self.batch_size))

    def fit_features(self, z: Any, y: Any = None) -> Self:
        bank = torch.as_tensor(as_features(z, "embeddings"))
        self.bank = torch.nn.functional.normalize(bank, dim=1)
        self._fitted = True
        return self

    def predict_features(self, z: Any) -> np.ndarray:
        self._check_fitted()
        assert self.bank is not None
        q = torch.nn.functional.normalize(torch.as_tensor(as_features(z, "embeddings")), dim=1)
        return kth_neighbour_distance(q, self.bank, min(self.k, len(self.bank))).numpy()

    @torch.no_grad()
    def predict(self, x: Any) -> np.ndarray:
        return self.predict_features(batched(self.model.embed, as_inputs(x), self.batch_size))
