"""A small conv net with BatchNorm, trained briefly on real images and exported three ways.

The imported-model tests import the same network as ONNX, torch.export and TorchScript and
compare each with the module it came from, so the module, its training and its exports live here.
"""

from pathlib import Path

import torch
from torch import nn

from models.data import Dataset
from models.imaging import encode_png

INPUT_SHAPE = (1, 28, 28)
MEAN, STD = 0.286, 0.353  # Fashion-MNIST's, applied by the card (the graph takes normalised input)


class SmallBNNet(nn.Module):
    """Conv-BN-ReLU-pool twice, then two dense layers with dropout between (all eval-sensitive)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(16 * 7 * 7, 32)
        self.dropout = nn.Dropout(0.2)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)  # (B, 16*7*7)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))  # (B, num_classes)


class PixelNet(nn.Module):
    """The trained graph behind the card's normalisation, as the service runs it natively."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - MEAN) / STD)


def train_small_bn_net(train: Dataset, steps: int = 150, seed: int = 0) -> SmallBNNet:
    """A ``SmallBNNet`` trained for ``steps`` Adam steps on normalised images, in eval mode."""
    torch.manual_seed(seed)
    model = SmallBNNet(len(train.class_names)).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = (train.float() - MEAN) / STD, train.y
    for step in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def safe_names(class_names: tuple[str, ...]) -> tuple[str, ...]:
    """Class names usable as folder names ("T-shirt/top" has a slash)."""
    return tuple(n.replace("/", "-") for n in class_names)


def write_image_folder(data: Dataset, folder: Path) -> Path:
    """``data`` as ``folder/<class>/<i>.png``, class folders named by ``safe_names``."""
    names = safe_names(data.class_names)
    x = data.float()
    for i, label in enumerate(data.y.tolist()):
        target = folder / names[label]
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{i:05d}.png").write_bytes(encode_png(x[i]))
    return folder
