"""A compact CNN for Fashion-MNIST: two conv blocks of two 3x3 convolutions, then two dense layers.

Small on purpose: the gradient engine runs a forward and C vector-Jacobian products per request,
so every parameter is paid for many times. No BatchNorm, so no train/eval difference to get wrong.
"""

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import Activation, Normalize, make_activation


@dataclass(frozen=True)
class CompactCNNConfig:
    in_channels: int = 1
    image_size: int | tuple[int, int] = 28  # a square's side, or (H, W): two-digit MNIST's (28, 56)
    num_classes: int = 10
    widths: tuple[int, int] = (16, 32)
    hidden: int = 128
    dropout: float = 0.1
    activation: Activation = "relu"
    mean: tuple[float, ...] = (0.2860,)
    std: tuple[float, ...] = (0.3530,)


class CompactCNN(nn.Module):
    def __init__(self, config: CompactCNNConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2 = config.widths
        self.normalize = Normalize(config.mean, config.std)
        self.features = nn.Sequential(
            nn.Conv2d(config.in_channels, w1, 3, padding=1),
            make_activation(config.activation),
            nn.Conv2d(w1, w1, 3, padding=1),
            make_activation(config.activation),
            nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, 3, padding=1),
            make_activation(config.activation),
            nn.Conv2d(w2, w2, 3, padding=1),
            make_activation(config.activation),
            nn.MaxPool2d(2),
        )
        size = config.image_size
        h, w = (size, size) if isinstance(size, int) else size
        self.fc1 = nn.Linear(w2 * (h // 4) * (w // 4), config.hidden)
        self.act = make_activation(config.activation)
        self.dropout = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.hidden, config.num_classes)

    @property
    def head(self) -> nn.Linear:
        """The last layer: ``forward(x) == head(embed(x))`` in eval mode (models.penultimate)."""
        return self.fc2

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, hidden), the input of ``head``."""
        x = self.features(self.normalize(x))  # (B, w2, H/4, W/4)
        return self.act(self.fc1(x.flatten(1)))  # (B, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.embed(x)))  # (B, num_classes) logits
