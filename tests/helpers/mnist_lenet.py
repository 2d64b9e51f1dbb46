"""Fixtures of the attack tests: real MNIST and a small LeNet trained on it in a few seconds."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.architectures import build_model, config_to_dict
from models.card import ModelCard
from models.repository import save_model_folder

# A narrow LeNet: 8 and 16 convolutions, 64 hidden units; about 97% test accuracy after the
# training below, which is what the attacks need (a model whose decisions mean something).
SMALL_LENET = {"conv1_channels": 8, "conv2_channels": 16, "hidden": 64}
TRAIN_STEPS = 400
N_TEST = 200


@dataclass
class Split:
    x: torch.Tensor  # float (N, 1, 28, 28) in [0, 1]
    y: torch.Tensor  # int64 (N,)


@pytest.fixture(scope="session")
def mnist(shared_data_dir) -> dict[str, Split]:
    """The 5,000 MNIST training images and the first ``N_TEST`` test images."""
    from models.data import load_dataset

    train = load_dataset("mnist", "train", data_dir=shared_data_dir)
    test = load_dataset("mnist", "test", data_dir=shared_data_dir, limit=N_TEST)
    return {
        "train": Split(train.float(), torch.as_tensor(train.y, dtype=torch.long)),
        "test": Split(test.float(), torch.as_tensor(test.y, dtype=torch.long)),
    }


@pytest.fixture(scope="session")
def trained_lenet(mnist) -> nn.Module:
    """A small LeNet trained with Adam for ``TRAIN_STEPS`` steps of 64 (seeded; a few seconds)."""
    torch.manual_seed(0)
    model = build_model("lenet", SMALL_LENET).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    x, y = mnist["train"].x, mnist["train"].y
    for _ in range(TRAIN_STEPS):
        idx = torch.randint(0, len(x), (64,), generator=generator)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)  # as the repository serves models
    return model


@pytest.fixture(scope="session")
def correct_batch(mnist, trained_lenet) -> Split:
    """Up to 64 test images the trained model classifies correctly."""
    x, y = mnist["test"].x, mnist["test"].y
    with torch.no_grad():
        ok = trained_lenet(x).argmax(dim=1) == y
    return Split(x[ok][:64], y[ok][:64])


@pytest.fixture(scope="session")
def lenet_repo(tmp_path_factory, trained_lenet):
    """A model repository holding ``trained_lenet`` as the model folder ``mnist-small``."""
    root = tmp_path_factory.mktemp("repo")
    card = ModelCard(
        name="mnist-small",
        version="0.1.0",
        architecture="lenet",
        config=config_to_dict(trained_lenet.config),
        input_shape=(1, 28, 28),
        class_names=tuple(str(i) for i in range(10)),
        dataset="mnist",
    )
    save_model_folder(root / "mnist-small", card, trained_lenet)
    return root
