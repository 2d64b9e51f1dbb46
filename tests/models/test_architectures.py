"""Architectures: shapes, parameter counts, pixel-space inputs, eval-mode BatchNorm."""

import pytest
import torch

from models.architectures import build_model, make_config
from models.errors import ModelLoadError


@pytest.mark.parametrize(
    ("architecture", "shape", "params"),
    [
        ("lenet", (1, 28, 28), 431_080),
        ("compact-cnn", (1, 28, 28), 218_490),
        ("resnet", (3, 32, 32), 269_722),
    ],
)
def test_output_shape_and_size(architecture, shape, params):
    model = build_model(architecture, {})
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.rand(3, *shape)).shape == (3, 10)
    assert model.embed(torch.rand(3, *shape)).dim() == 2


def test_resnet20_has_the_papers_parameter_count():
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters.
    model = build_model("resnet", {"depth": 20})
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 0.27


def test_eval_mode_makes_resnet_batch_independent():
    torch.manual_seed(0)
    model = build_model("resnet", {})
    x = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        alone = model(x[:1])
        batched = model(x)[:1]
    torch.testing.assert_close(alone, batched, rtol=1e-4, atol=1e-5)


def test_softplus_swap_keeps_weights_compatible_and_has_second_derivatives():
    relu = build_model("compact-cnn", {})
    soft = build_model("compact-cnn", {"activation": "softplus"})
    soft.load_state_dict(relu.state_dict())
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    (g,) = torch.autograd.grad(soft(x)[:, 0].sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.pow(2).sum(), x)
    assert h.abs().sum() > 0


def test_normalisation_is_inside_the_model():
    model = build_model("lenet", {"mean": [0.5], "std": [0.25]})
    x = torch.full((1, 1, 28, 28), 0.5)
    assert torch.allclose(model.normalize(x), torch.zeros_like(x))


def test_unknown_architecture_or_field_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="unknown architecture"):
        build_model("vgg", {})
    with pytest.raises(ModelLoadError, match="unknown lenet config field"):
        make_config("lenet", {"depth": 3})
