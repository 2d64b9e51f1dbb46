"""The shipped zoo: every model loads, keeps its card's accuracy, exports to ONNX, and its
trust score flags about alpha of clean inputs."""

import math

import pytest
import torch

from detectors.pipeline import load_pipeline
from gga_lab.flags import flagged_and_correct
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
    # limit, not a prefix: CIFAR-10's test folder is stored class by class, so its first 1,000
    # images are all airplanes; limit takes a class-balanced subset there.
    data = load_dataset(zoo_model.card.dataset, "test", data_dir=shared_data_dir, limit=SLICE)
    return data.float(), data.y


def test_the_default_and_the_weight_decay_pair_ship():
    assert {"fashion-mnist-cnn", "mnist-lenet-low", "mnist-lenet-high"} <= set(ZOO.names())


def test_folders_stay_small(zoo_model):
    # Weights (1.7-1.9 MB) and detector.json, whose k-NN view keeps up to a million float16
    # training features (2.7 MB as base64; the LeNets' 500-wide features fill it) beside the
    # Mahalanobis projection: 6.2 MB at most today. The image bakes every model in.
    size = sum(p.stat().st_size for p in zoo_model.path.iterdir())
    assert size < 8 * 2**20


def test_accuracy_matches_the_card(zoo_model, test_slice):
    x, y = test_slice
    with torch.no_grad():
        accuracy = (zoo_model.module(x).argmax(1) == y).float().mean().item()
    claimed = zoo_model.card.metrics["test_accuracy"]
    # The card measured all 10,000 test images, this a sample of SLICE: allow three binomial
    # standard deviations of the sample (1.5 points at 97.6%, 3.1 at 87.6%), far less than what
    # wrong weights or a wrong preprocessing lose.
    tolerance = 3 * math.sqrt(claimed * (1 - claimed) / len(y))
    assert abs(accuracy - claimed) <= tolerance, (
        f"{accuracy:.4f} measured vs {claimed:.4f} on card (tolerance {tolerance:.4f})"
    )


def test_onnx_export_matches_torch(zoo_model, test_slice, tmp_path):
    x, _ = test_slice
    path = export_onnx(zoo_model, tmp_path / "model.onnx")
    parity = check_parity(zoo_model, path, x[:256])
    assert parity.max_abs_diff <= PARITY_ATOL
    assert parity.same_argmax == 1.0
    # The dynamic batch axis: one image and an odd batch both run.
    assert onnx_logits(path, x[:1].numpy()).shape == (1, zoo_model.card.num_classes)
    assert onnx_logits(path, x[:7].numpy()).shape == (7, zoo_model.card.num_classes)


def test_shipped_detector_flags_about_alpha_of_clean_test_images(zoo_model, shared_data_dir):
    # The trust score's promise on data its detector never saw, through the served pipeline.
    # 1,000 test images; the spread to expect is about 1 point (test sample plus a calibration
    # set of 488-1,842 images), so 3 points of tolerance only fails a broken calibration.
    # gga_lab/analysis/false_alarms.py measures the whole test set (docs/results.md).
    pipeline = load_pipeline(zoo_model.path, zoo_model.module, zoo_model.card.weights_sha256)
    assert pipeline.scorer.provenance["calibration_inputs"] == "held out from training"
    data = load_dataset(zoo_model.card.dataset, "test", data_dir=shared_data_dir, limit=1000)
    flagged, correct = flagged_and_correct(pipeline, data.float(), data.y, batch_size=500)
    rate = flagged[correct].mean()
    assert abs(rate - pipeline.alpha) <= 0.03, f"{rate:.3f} of clean test images flagged"
