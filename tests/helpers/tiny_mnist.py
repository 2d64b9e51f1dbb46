"""A tiny classifier trained for a few seconds on real MNIST, shared by the detector tests."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.helpers.models import TinyCNN, seeded


@dataclass
class Trained:
    model: nn.Module
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def train_tiny(x: Tensor, y: Tensor, epochs: int = 3, seed: int = 0) -> nn.Module:
    """Train ``TinyCNN`` with Adam; a few seconds per epoch on 1,500 MNIST images."""
    model = seeded(TinyCNN, seed=seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def tiny_mnist(shared_data_dir) -> Trained:
    from models.data import load_dataset, stratified_indices

    train = load_dataset("mnist", "train", data_dir=shared_data_dir)
    # The shared MNIST training file is stored class by class: take a balanced subset.
    train = train.subset(stratified_indices(train.y, 1500, seed=0))
    test = load_dataset("mnist", "test", data_dir=shared_data_dir, limit=400)
    torch.manual_seed(0)
    model = train_tiny(train.float(), train.y, epochs=2)
    return Trained(model, train.float(), train.y, test.float(), test.y)
