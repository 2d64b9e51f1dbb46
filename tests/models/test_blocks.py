"""The blocks of a classifier, found by watching its forward pass (``models.blocks``).

Each zoo architecture's blocks are the layers its code says end a resolution; an imported ONNX
graph has blocks too; a model without 4-D outputs has none; and another thread's forward pass
through the same model never leaks into a call's blocks.
"""

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from detectors.collect import view_inputs
from detectors.engine import EngineOptions, GradientEngine
from detectors.views.blocks import BlocksView
from gga_lab.metrics import auroc
from models.architectures import build_model
from models.blocks import MAX_BLOCKS, block_features, has_blocks
from models.data import load_dataset
from models.repository import ModelRepository

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"


def _means(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=(2, 3))


def _expected(name: str, model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each architecture's block outputs, computed by hand from its layers."""
    h = model.normalize(x)
    if name == "lenet":
        c1 = model.conv1(h)
        p1 = model.pool(c1)
        c2 = model.conv2(p1)
        return [_means(c1), _means(p1), _means(c2), _means(model.pool(c2))]
    if name == "compact-cnn":
        f = model.features
        a = f[:4](h)  # the last activation at full size
        b = f[4:9](a)  # pooled once, two convolutions: the last activation at half size
        return [_means(a), _means(b), _means(f[9](b))]
    assert name == "resnet"
    h = model.act(model.bn(model.conv(h)))
    ends = []
    per_stage = len(model.layers) // 3
    for stage in range(3):
        h = model.layers[stage * per_stage : (stage + 1) * per_stage](h)
        ends.append(_means(h))
    return ends


@pytest.mark.parametrize(
    "name, shape",
    [("lenet", (1, 28, 28)), ("compact-cnn", (1, 28, 28)), ("resnet", (3, 32, 32))],
)
def test_every_zoo_architecture_gives_the_blocks_its_code_ends(name, shape):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.rand(3, *shape)
    blocks = block_features(model, x)
    with torch.no_grad():
        expected = _expected(name, model, x)
    assert len(blocks) == len(expected)
    for got, want in zip(blocks, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert has_blocks(model, shape)


def test_a_model_without_4d_outputs_has_no_blocks():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    assert block_features(mlp, torch.rand(2, 1, 28, 28)) == ()
    assert not has_blocks(mlp, (1, 28, 28))


def test_only_the_deepest_blocks_are_kept_past_the_limit():
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    layers += [nn.MaxPool2d(2, ceil_mode=True) for _ in range(MAX_BLOCKS + 2)]
    model = nn.Sequential(*layers).eval()
    blocks = block_features(model, torch.rand(2, 1, 512, 512))
    assert len(blocks) == MAX_BLOCKS
    # The deepest is the last pool's output: 512 halved MAX_BLOCKS + 2 times.
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(block_features(model, x)[-1], _means(model(x)))


def test_another_threads_forward_never_leaks_into_a_call():
    torch.manual_seed(0)
    model = build_model("compact-cnn").eval()
    x = torch.rand(4, 1, 28, 28)
    expected = block_features(model, x)
    stop = threading.Event()

    def busy() -> None:
        with torch.no_grad():
            while not stop.is_set():
                model(torch.rand(4, 1, 28, 28))  # same batch size: only the thread filter helps

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        for _ in range(20):
            got = block_features(model, x)
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):
                torch.testing.assert_close(a, b)
    finally:
        stop.set()
        worker.join()


@pytest.mark.parametrize("name", ["mnist-lenet-low", "mnist-cnn", "cifar10-resnet20"])
def test_the_blocks_view_fits_on_every_zoo_architecture_and_flags_noise(name, shared_data_dir):
    model = ModelRepository(ZOO).load(name).module
    card = ModelRepository(ZOO).card(name)
    data = load_dataset(card.dataset, "test", data_dir=shared_data_dir, limit=300)
    engine = GradientEngine(model, EngineOptions(blocks=True, strategy="batched"))
    fit = view_inputs(engine(data.float()[:200]))
    view = BlocksView().fit_features(fit.take(fit.predicted == data.y[:200].numpy()))
    clean = view.predict_features(view_inputs(engine(data.float()[200:])))
    noise = view.predict_features(view_inputs(engine(torch.rand(50, *card.input_shape))))
    assert len(view.gaussians) == len(fit.blocks) >= 3
    assert np.isfinite(clean).all() and auroc(clean, noise) > 0.95, name
