"""The weight-decay experiment: minimal confident targeted perturbations, transfer, report."""

import json
import math

import pytest
import torch

from attacks.base import AttackParameterError, TargetMode
from attacks.pgd import PGD
from gga_cli import main
from gga_lab.experiments.weight_decay import (
    FIGURE_NAME,
    JSON_NAME,
    MARKDOWN_NAME,
    NotEnoughImagesError,
    minimal_targeted_l2,
    next_label,
    select_images,
)
from models.repository import ModelRepository

CONFIDENCE = 0.95


def _target_probability(model, x, target):
    with torch.no_grad():
        return model(x).softmax(dim=1).gather(1, target[:, None]).squeeze(1)


def test_next_label_wraps():
    assert next_label(torch.arange(10), 10).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


N_SEARCH = 6


@pytest.fixture(scope="module")
def searched(trained_lenet, correct_batch):
    """One small search, shared by the tests that inspect it."""
    x, y = correct_batch.x[:N_SEARCH], correct_batch.y[:N_SEARCH]
    target = next_label(y, 10)
    found = minimal_targeted_l2(trained_lenet, x, target, CONFIDENCE, rounds=5, steps=10)
    return x, y, target, found


def test_found_perturbation_reaches_the_next_label_confidently(trained_lenet, searched):
    x, _y, target, found = searched
    assert found.success.sum() >= N_SEARCH - 1
    ok = found.success
    # Checked again here, on the returned images, not on the search's own record.
    assert (_target_probability(trained_lenet, found.x_adv, target)[ok] >= CONFIDENCE).all()
    assert float(found.x_adv.min()) >= 0 and float(found.x_adv.max()) <= 1
    norms = (found.x_adv - x).flatten(1).norm(dim=1)
    assert torch.allclose(found.norm[ok], norms[ok], atol=1e-5)
    assert torch.isinf(found.norm[~ok]).all()
    assert (found.norm[ok] > 0).all()


def test_bisection_finds_smaller_norms_than_a_fixed_large_eps(trained_lenet, searched):
    x, y, target, found = searched
    fixed = PGD(
        trained_lenet,
        eps=5.0,
        norm="l2",
        steps=10,
        random_start=False,
        target_mode=TargetMode.GIVEN,
    )(x, y, target=target)
    fixed_ok = _target_probability(trained_lenet, fixed.x_adv, target) >= CONFIDENCE
    both = found.success & fixed_ok
    assert both.sum() >= N_SEARCH - 2
    fixed_norm = (fixed.x_adv - x).flatten(1).norm(dim=1)
    assert (found.norm[both] < fixed_norm[both]).all()
    assert found.norm[both].median() < 0.8 * fixed_norm[both].median()


def test_bad_parameters_and_too_few_images(trained_lenet, correct_batch):
    x, y = correct_batch.x[:2], correct_batch.y[:2]
    with pytest.raises(AttackParameterError, match="unknown method"):
        minimal_targeted_l2(trained_lenet, x, y, method="deepfool")
    with pytest.raises(AttackParameterError, match="min_confidence"):
        minimal_targeted_l2(trained_lenet, x, y, min_confidence=1.5)
    with pytest.raises(NotEnoughImagesError, match="at most"):
        select_images([trained_lenet], correct_batch.x, correct_batch.y, n=10_000)


def test_selected_images_are_correct_on_every_model_and_balanced(trained_lenet, mnist):
    x, y = mnist["test"].x, mnist["test"].y
    idx = select_images([trained_lenet], x, y, n=20, seed=0)
    assert len(set(idx.tolist())) == 20
    with torch.no_grad():
        assert (trained_lenet(x[idx]).argmax(dim=1) == y[idx]).all()
    assert torch.bincount(y[idx], minlength=10).tolist() == [2] * 10


def test_cli_writes_results_on_the_zoo_pair(shared_data_dir, tmp_path):
    names = set(ModelRepository().names())
    if not {"mnist-lenet-low", "mnist-lenet-high"} <= names:
        pytest.skip("the zoo's weight-decay pair is not in models/zoo")
    code = main(
        [
            "experiment",
            "weight-decay",
            "--n",
            "4",
            "--data-dir",
            str(shared_data_dir),
            "--out-dir",
            str(tmp_path),
            "--rounds",
            "4",
            "--steps",
            "8",
            "--threads",
            "0",  # keep the test session's thread setting
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / JSON_NAME).read_text())
    models = [m["name"] for m in result["models"]]
    assert models == ["mnist-lenet-low", "mnist-lenet-high"]
    for m in result["models"]:
        assert len(m["norms"]) == 4
        finite = [v for v in m["norms"] if math.isfinite(v)]
        assert m["success_rate"] == len(finite) / 4
        assert min(finite) <= m["median_l2"] <= max(finite)
    table = result["transfer"]
    assert set(table) == set(models)
    for source, row in table.items():
        assert set(row) == set(models)
        assert row[source]["targeted_confident"] == 1.0  # only successful adversarials count
        for cell in row.values():
            assert 0 <= cell["targeted"] <= 1 and 0 <= cell["misclassified"] <= 1
    assert (tmp_path / "figures" / FIGURE_NAME).stat().st_size > 10_000
    markdown = (tmp_path / MARKDOWN_NAME).read_text()
    assert "mnist-lenet-high" in markdown and f"figures/{FIGURE_NAME}" in markdown


def test_cli_rejects_a_bad_n(capsys):
    assert main(["experiment", "weight-decay", "--n", "0"]) == 2
    assert "--n must be positive" in capsys.readouterr().err
