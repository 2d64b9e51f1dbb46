"""ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2): 0.27M parameters.

Three stages of ``n`` basic blocks at widths 16, 32, 64 (depth = 6n + 2), parameter-free
shortcuts (option A: stride-2 subsampling and zero-padded channels). BatchNorm makes eval mode
mandatory at inference, or an input's output depends on the rest of its batch.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import Activation, Normalize, make_activation


@dataclass(frozen=True)
class ResNetConfig:
    depth: int = 20
    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    widths: tuple[int, int, int] = (16, 32, 64)
    activation: Activation = "relu"
    mean: tuple[float, ...] = (0.4941, 0.4851, 0.4502)
    std: tuple[float, ...] = (0.2467, 0.2429, 0.2616)


class _PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, activation: Activation) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act1 = make_activation(activation)
        self.act2 = make_activation(activation)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = _PadShortcut(stride, planes - in_planes)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        if (config.depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be 6n + 2, got {config.depth}")
        self.config = config
        blocks_per_stage = (config.depth - 2) // 6
        w1, w2, w3 = config.widths
        self.normalize = Normalize(config.mean, config.std)
        self.conv = nn.Conv2d(config.in_channels, w1, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(w1)
        self.act = make_activation(config.activation)
        layers: list[nn.Module] = []
        in_planes = w1
        for planes, stride in ((w1, 1), (w2, 2), (w3, 2)):
            for i in range(blocks_per_stage):
                layers.append(
                    BasicBlock(in_planes, planes, stride if i == 0 else 1, config.activation)
                )
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(w3, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    @property
    def head(self) -> nn.Linear:
        """The last layer: ``forward(x) == head(embed(x))`` in eval mode (models.penultimate)."""
        return self.fc

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, 64) after global average pooling."""
        x = self.act(self.bn(self.conv(self.normalize(x))))  # (B, 16, 32, 32)
        x = self.layers(x)  # (B, 64, 8, 8)
        return x.mean(dim=(2, 3))  # (B, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))  # (B, num_classes) logits
