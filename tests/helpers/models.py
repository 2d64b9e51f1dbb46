"""Tiny seeded models for tests that need a classifier but not a trained one."""

import torch
from torch import nn


class TinyLinear(nn.Module):
    """Logits = W x + b on flattened pixels: its input gradients have a closed form."""

    def __init__(self, in_shape: tuple[int, int, int] = (1, 8, 8), num_classes: int = 5) -> None:
        super().__init__()
        c, h, w = in_shape
        self.fc = nn.Linear(c * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class TinyCNN(nn.Module):
    """A small conv net with a nonlinearity, for tests that need a non-linear model."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, side: int = 28) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.fc = nn.Linear(8 * (side // 2) ** 2, num_classes)

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


def seeded(module_cls: type[nn.Module], seed: int = 0, **kwargs) -> nn.Module:
    """Build ``module_cls(**kwargs)`` with weights fixed by ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return module_cls(**kwargs).eval()
