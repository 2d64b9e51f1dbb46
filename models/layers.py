"""Building blocks shared by the architectures."""

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "softplus"]


def make_activation(name: Activation, softplus_beta: float = 10.0) -> nn.Module:
    """Return a fresh activation module.

    Softplus exists so that second derivatives are non-zero: the cosine-similarity attack
    differentiates through input gradients, and ReLU's second derivative is zero almost everywhere.
    A large ``beta`` keeps Softplus close to ReLU, so a trained ReLU net swapped to Softplus keeps
    its accuracy.
    """
    if name == "relu":
        return nn.ReLU()  # never inplace: in-place ops can break input gradients
    if name == "softplus":
        return nn.Softplus(beta=softplus_beta)
    raise ValueError(f"unknown activation {name!r}; expected 'relu' or 'softplus'")


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so every model takes pixels in [0, 1].

    Attacks, the gradient engine and the service all work in pixel space; keeping the
    normalisation here means none of them needs to know a model's statistics.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
