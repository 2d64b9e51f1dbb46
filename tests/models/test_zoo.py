"""The shipped zoo: every model loads, keeps the accuracy its card claims, and exports to ONNX."""

import pytest
import torch

from models.data import load_dataset
from models.export import PARITY_ATOL, check_parity, export_onnx, onnx_logits
from models.repository import ModelRepository

ZOO = ModelRepository()
SLICE = 1000  # test images re-measured per model


@pytest.fixture(scope="module", params=ZOO.names())
def zoo_model(request):
    return ZOO.load(request.param)


@pytest.fixture(scope="module")
def test_slice(zoo_model, shared_data_dir):
    data = load_dataset(zoo_model.card.dataset, "test", data_dir=shared_data_dir)
    return data.float()[:SLICE], data.y[:SLICE]


def test_the_default_and_the_weight_decay_pair_ship():
    assert {"fashion-mnist-cnn", "mnist-lenet-low", "mnist-lenet-high"} <= set(ZOO.names())


def test_folders_stay_small(zoo_model):
    size = sum(p.stat().st_size for p in zoo_model.path.iterdir())
    assert size < 5 * 2**20


def test_accuracy_matches_the_card(zoo_model, test_slice):
    x, y = test_slice
    with torch.no_grad():
        accuracy = (zoo_model.module(x).argmax(1) == y).float().mean().item()
    claimed = zoo_model.card.metrics["test_accuracy"]
    assert abs(accuracy - claimed) <= 0.015, f"{accuracy:.4f} measured vs {claimed:.4f} on card"


def test_onnx_export_matches_torch(zoo_model, test_slice, tmp_path):
    x, _ = test_slice
    path = export_onnx(zoo_model, tmp_path / "model.onnx")
    parity = check_parity(zoo_model, path, x[:256])
    assert parity.max_abs_diff <= PARITY_ATOL
    assert parity.same_argmax == 1.0
    # The dynamic batch axis: one image and an odd batch both run.
    assert onnx_logits(path, x[:1].numpy()).shape == (1, zoo_model.card.num_classes)
    assert onnx_logits(path, x[:7].numpy()).shape == (7, zoo_model.card.num_classes)
