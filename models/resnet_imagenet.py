"""ResNet-18/34 in the ImageNet layout (He et al. 2016, table 1), as photo classifiers ship.

A 7x7 stride-2 stem and a max pool, then four stages of basic blocks at widths 64-512 with
1x1 projection shortcuts, global average pooling and one linear layer: the layout of
torchvision's ``resnet18`` (11.7M parameters at 1,000 classes), written here because the
project does not depend on torchvision. It is what the service is measured on at the size
users run (224x224 inputs, 1,000 classes): the engine benchmark, the memory budget and the
warm-up. Inputs are pixels in [0, 1], normalised inside with ImageNet's statistics.
"""

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import Activation, Normalize, make_activation
from models.resnet import BasicBlock

# Basic blocks per stage.
_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


@dataclass(frozen=True)
class ImageNetResNetConfig:
    depth: int = 18
    in_channels: int = 3
    image_size: int = 224
    num_classes: int = 1000
    activation: Activation = "relu"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)


class _Block(BasicBlock):
    """ResNet-20's basic block with the ImageNet layout's shortcut: a strided 1x1 convolution
    and BatchNorm where the shape changes (option B), not subsampling and zero padding."""

    def __init__(self, in_planes: int, planes: int, stride: int, activation: Activation) -> None:
        super().__init__(in_planes, planes, stride, activation)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )


class ImageNetResNet(nn.Module):
    def __init__(self, config: ImageNetResNetConfig) -> None:
        super().__init__()
        if config.depth not in _STAGES:
            raise ValueError(f"ImageNet ResNet depth must be one of {sorted(_STAGES)}")
        self.config = config
        self.normalize = Normalize(config.mean, config.std)
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            make_activation(config.activation),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        in_planes = 64
        widths = (64, 128, 256, 512)
        for i, (planes, blocks) in enumerate(zip(widths, _STAGES[config.depth], strict=True)):
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(_Block(in_planes, planes, stride, config.activation))
                in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(512, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Linear:
        """The last layer: ``forward(x) == head(embed(x))`` in eval mode (models.penultimate)."""
        return self.fc

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, 512) after global average pooling."""
        x = self.layers(self.stem(self.normalize(x)))  # (B, 512, H/32, W/32)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))  # (B, num_classes) logits
