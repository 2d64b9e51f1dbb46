"""LeNet of the weight-decay paper (Tanay and Griffin 2018): conv-pool-conv-pool-fc-fc.

The Caffe LeNet they start from: 20 and 50 5x5 convolutions, each followed by 2x2 max pooling,
a 500-unit hidden layer and the classifier. As in Caffe, the only explicit nonlinearity is after
the hidden layer (the max pools are the others).
"""

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import Activation, Normalize, make_activation


@dataclass(frozen=True)
class LeNetConfig:
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    conv1_channels: int = 20
    conv2_channels: int = 50
    hidden: int = 500
    activation: Activation = "relu"
    mean: tuple[float, ...] = (0.1307,)
    std: tuple[float, ...] = (0.3081,)


class LeNet(nn.Module):
    def __init__(self, config: LeNetConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = Normalize(config.mean, config.std)
        self.conv1 = nn.Conv2d(config.in_channels, config.conv1_channels, kernel_size=5)
        self.conv2 = nn.Conv2d(config.conv1_channels, config.conv2_channels, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        side = ((config.image_size - 4) // 2 - 4) // 2  # 28 -> 24 -> 12 -> 8 -> 4
        self.fc1 = nn.Linear(config.conv2_channels * side * side, config.hidden)
        self.act = make_activation(config.activation)
        self.fc2 = nn.Linear(config.hidden, config.num_classes)

    @property
    def head(self) -> nn.Linear:
        """The last layer: ``forward(x) == head(embed(x))`` in eval mode (models.penultimate)."""
        return self.fc2

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, hidden), the input of ``head``."""
        x = self.normalize(x)
        x = self.pool(self.conv1(x))  # (B, 20, 12, 12)
        x = self.pool(self.conv2(x))  # (B, 50, 4, 4)
        return self.act(self.fc1(x.flatten(1)))  # (B, 500)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.embed(x))  # (B, num_classes) logits
