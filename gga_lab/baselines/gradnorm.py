"""GradNorm (Huang et al. 2021): the norm of the last layer's gradient of KL(uniform || softmax)."""

from typing import Any, Self

import numpy as np
import torch
from torch import Tensor, nn

from gga_lab.baselines.common import ModelDetector, as_inputs, batched
from models.penultimate import has_penultimate


class GradNorm(ModelDetector):
    """Outlier score = minus the L1 norm of ``d KL(u || softmax(z / T)) / d W`` of the last layer.

    Computed with autograd, as Huang et al. do, one input at a time (batched inputs would sum
    their gradients). The ``gradnorm`` trust view computes the same number in closed form.

    Args:
        model: classifier with ``embed(x)`` and a linear ``head`` (``models.penultimate``).
        temperature: T (Huang et al. use 1).
        batch_size: inputs per forward pass of ``embed``.

    Raises:
        TypeError: the model does not expose penultimate features and a linear head.
    """

    kind = "gradnorm"

    def __init__(self, model: nn.Module, temperature: float = 1.0, batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        if not has_penultimate(model):
            raise TypeError(f"{type(model).__name__} has no embed(x) and linear head")
        self.temperature = float(temperature)

    def fit(self, x: Any = None, y: Any = None) -> Self:
        self._fitted = True  # nothing to fit
        return self

    def fit_features(self, z: Any = None, y: Any = None) -> Self:
        return self.fit()

    def predict_features(self, z: Any) -> np.ndarray:
        """Scores (N,) from penultimate features (N, F)."""
        self._check_fitted()
        return self._score(torch.as_tensor(np.asarray(z, dtype=np.float32))).double().numpy()

    def _score(self, h: Tensor) -> Tensor:
        head = self.model.head
        weight = head.weight.detach()
        scores = []
        for row in h:
            w = weight.clone().requires_grad_(True)
            with torch.enable_grad():
                logits = torch.nn.functional.linear(row[None], w, head.bias) / self.temperature
                kl = -torch.log_softmax(logits, dim=1).mean()  # KL(u || p) up to a constant
                (grad,) = torch.autograd.grad(kl, w)
            scores.append(-grad.abs().sum())
        return torch.stack(scores)

    def predict(self, x: Any) -> np.ndarray:
        self._check_fitted()
        with torch.no_grad():
            h = batched(self.model.embed, as_inputs(x), self.batch_size)
        return self.predict_features(h)
