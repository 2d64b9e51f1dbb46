"""Every zoo architecture exposes penultimate features whose head gives its logits."""

import pytest
import torch
from torch import nn

from models.architectures import ARCHITECTURES, build_model
from models.penultimate import has_penultimate, logits_and_features


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_head_of_embed_is_the_forward_pass(architecture: str) -> None:
    torch.manual_seed(0)
    model = build_model(architecture).eval()
    shape = (3, 32, 32) if architecture == "resnet" else (1, 28, 28)
    x = torch.rand(4, *shape)
    assert has_penultimate(model)
    with torch.no_grad():
        logits, features = logits_and_features(model, x)
        expected = model(x)
    assert features is not None and features.shape[0] == 4 and features.dim() == 2
    assert features.shape[1] == model.head.in_features
    torch.testing.assert_close(logits, expected)


def test_a_model_without_features_gives_none() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    assert not has_penultimate(model)
    logits, features = logits_and_features(model, torch.rand(2, 1, 2, 2))
    assert features is None and logits.shape == (2, 3)
