"""End to end: fit a trust scorer on a tiny trained model, evaluate it, and the CLI commands."""

import json
import shutil

import numpy as np
import pytest
import torch

from cli import main
from detectors.base import DetectorFitError
from detectors.evaluate import EvalConfig, evaluate_model
from detectors.fit import FitConfig, fit_trust_scorer, split_indices
from detectors.report import write_report
from models.repository import DEFAULT_REPOSITORY, ModelRepository
from tests.helpers.models import TinyCNN, seeded


def test_split_is_disjoint_and_seeded() -> None:
    fit, cal = split_indices(1000, 600, 300, seed=1)
    assert len(fit) == 600 and len(cal) == 300
    assert not set(fit.tolist()) & set(cal.tolist())
    fit2, cal2 = split_indices(1000, 600, 300, seed=1)
    assert torch.equal(fit, fit2) and torch.equal(cal, cal2)
    fit3, cal3 = split_indices(100, 600, 300, seed=1)  # small split: calibration keeps half
    assert len(cal3) == 50 and len(fit3) == 50


def test_calibration_draws_only_from_the_held_out_pool() -> None:
    pool = torch.arange(0, 1000, 10)  # 100 images the model was not trained on
    fit, cal = split_indices(1000, 2000, 60, seed=2, cal_pool=pool)
    assert len(cal) == 60 and set(cal.tolist()) <= set(pool.tolist())
    assert len(fit) == 940 and not set(fit.tolist()) & set(cal.tolist())
    fit2, cal2 = split_indices(1000, 2000, 60, seed=2, cal_pool=pool)
    assert torch.equal(fit, fit2) and torch.equal(cal, cal2)
    _, small = split_indices(1000, 10, 500, seed=2, cal_pool=pool)
    assert len(small) == 100  # the whole pool, never training images
    with pytest.raises(DetectorFitError, match="held-out"):
        split_indices(1000, 10, 10, seed=2, cal_pool=torch.empty(0, dtype=torch.long))


def test_fit_then_evaluate_detects_pgd_better_than_chance(tiny_mnist, tmp_path) -> None:
    t = tiny_mnist
    config = FitConfig(n_fit=500, n_cal=200, bins=20, strategy="vmap")
    scorer = fit_trust_scorer(
        t.model,
        t.x_train,
        t.y_train,
        model_name="tiny",
        weights_sha256="0" * 64,
        config=config,
        dataset="mnist",
        progress=False,
    )
    assert scorer.provenance["n_fit"] > 350 and scorer.provenance["n_cal"] > 150
    cfg = EvalConfig(
        n=100,
        pgd_steps=10,
        n_baseline_fit=300,
        kinds=("pgd_linf", "pgd_linf_min", "ood_noise"),
        strategy="vmap",
        examples=2,
    )
    result = evaluate_model(
        t.model,
        scorer,
        model_name="tiny",
        dataset="mnist",
        train=(t.x_train, t.y_train),
        test=(t.x_test, t.y_test),
        cfg=cfg,
        progress=False,
    )
    assert result.kinds["pgd_linf"]["n_untrusted"] > 50
    assert result.auroc["GGA"]["pgd_linf"] > 0.6
    assert result.auroc["GGA"]["pgd_linf_min"] > 0.6
    assert set(result.tnr) == {"max softmax", "ODIN", "energy", "Mahalanobis", "GGA"}
    assert 0.0 <= result.false_alarm["rate"] <= 0.25  # alpha 0.05 on ~90 inputs: loose bound
    paths = write_report(result, tmp_path, command="gga evaluate tiny")
    data = json.loads(paths["json"].read_text())
    assert data["pooled"]["GGA"]["AUROC"] == pytest.approx(result.pooled["GGA"]["AUROC"])
    report = paths["markdown"].read_text()
    assert "| GGA |" in report and "| method | PGD l∞ stopped at success |" in report
    assert paths["roc"].stat().st_size > 0 and paths["examples_pgd_linf"].stat().st_size > 0


def test_fit_refuses_too_few_correct_inputs(tiny_mnist) -> None:
    untrained = seeded(TinyCNN, seed=3)
    wrong_labels = (tiny_mnist.y_train + 1) % 10  # nothing is "correct"
    with pytest.raises(DetectorFitError, match="raise --n-fit"):
        fit_trust_scorer(
            untrained,
            tiny_mnist.x_train[:200],
            wrong_labels[:200],
            model_name="u",
            weights_sha256="0" * 64,
            config=FitConfig(n_fit=100, n_cal=100, strategy="vmap"),
            progress=False,
        )


@pytest.fixture
def zoo_copy(tmp_path):
    name = "mnist-lenet-low"
    if not (DEFAULT_REPOSITORY / name / "weights.safetensors").is_file():
        pytest.skip(f"zoo model {name} not present")
    dest = tmp_path / "repo" / name
    shutil.copytree(DEFAULT_REPOSITORY / name, dest, ignore=shutil.ignore_patterns("detector.json"))
    return tmp_path / "repo", name


def test_cli_fit_and_evaluate(zoo_copy, shared_data_dir, tmp_path, capsys) -> None:
    repo, name = zoo_copy
    common = ["--repo", str(repo), "--data-dir", str(shared_data_dir)]
    assert main(["evaluate", name, *common]) == 2
    assert f"gga fit {name}" in capsys.readouterr().err
    fit = ["fit", name, "--n-fit", "300", "--n-cal", "100", "--bins", "20", "--no-rescale"]
    assert main([*fit, *common]) == 0
    assert "wrote" in capsys.readouterr().out
    saved = json.loads((repo / name / "detector.json").read_text())
    assert saved["model"]["weights_sha256"] == ModelRepository(repo).card(name).weights_sha256
    assert saved["engine_options"]["rescale_logits"] is False  # served and evaluated that way
    # Calibrated on the 500 images the card's recipe held out from training.
    assert saved["provenance"]["calibration_inputs"] == "held out from training"
    assert saved["provenance"]["n_cal_drawn"] == 100
    out = tmp_path / "eval"
    args = [
        "evaluate",
        name,
        "--n",
        "40",
        "--kinds",
        "pgd_linf,noise",
        "--pgd-steps",
        "5",
        "--out-dir",
        str(out),
        *common,
    ]
    assert main(args) == 0
    assert (out / "results.md").is_file() and (out / "roc.png").is_file()
    assert np.isfinite(json.loads((out / "results.json").read_text())["pooled"]["GGA"]["AUROC"])


def test_cli_fit_without_a_recipe_calibrates_on_training_inputs_and_says_so(
    zoo_copy, shared_data_dir, capsys
) -> None:
    repo, name = zoo_copy
    card_path = repo / name / "card.json"
    card = json.loads(card_path.read_text())
    card["recipe"] = {}  # a model imported from elsewhere: which images trained it is unknown
    card_path.write_text(json.dumps(card))
    fit = ["fit", name, "--n-fit", "200", "--n-cal", "100", "--bins", "20"]
    assert main([*fit, "--repo", str(repo), "--data-dir", str(shared_data_dir)]) == 0
    assert "calibrating on training inputs" in capsys.readouterr().err
    saved = json.loads((repo / name / "detector.json").read_text())
    assert saved["provenance"]["calibration_inputs"] == "training"


@pytest.fixture
def fitted_zoo_copy(tmp_path):
    """A zoo model with its shipped detector, in a repository the test may change."""
    name = "mnist-lenet-low"
    if not (DEFAULT_REPOSITORY / name / "detector.json").is_file():
        pytest.skip(f"zoo model {name} not present")
    shutil.copytree(DEFAULT_REPOSITORY / name, tmp_path / "repo" / name)
    return tmp_path / "repo", name


def test_cli_evaluate_on_held_out_training_images(
    fitted_zoo_copy, shared_data_dir, tmp_path
) -> None:
    from models.data import load_dataset
    from models.splits import held_out_indices

    repo, name = fitted_zoo_copy
    common = ["--repo", str(repo), "--data-dir", str(shared_data_dir)]
    out = tmp_path / "eval"
    args = ["evaluate", name, "--split", "held-out", "--n", "60", "--kinds", "noise"]
    assert main([*args, "--out-dir", str(out), *common]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["split"] == "held-out"
    assert "first 60 held-out training inputs" in (out / "results.md").read_text()
    # The clean inputs are the card's held-out images in the seeded order, not test images.
    loaded = ModelRepository(repo).load(name)
    train = load_dataset("mnist", "train", data_dir=shared_data_dir)
    held_out = held_out_indices(loaded.card.recipe, train.y)
    order = held_out[torch.randperm(len(held_out), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        pred = loaded.module(train.float()[order[:60]]).argmax(1)
    correct = int((pred == train.y[order[:60]]).sum())
    assert result["false_alarm"]["n"] == correct
    assert result["clean_accuracy"] == pytest.approx(correct / 60)


def test_cli_evaluate_held_out_needs_a_recipe(fitted_zoo_copy, shared_data_dir, capsys) -> None:
    repo, name = fitted_zoo_copy
    card_path = repo / name / "card.json"
    card = json.loads(card_path.read_text())
    card["recipe"] = {}
    card_path.write_text(json.dumps(card))
    args = ["evaluate", name, "--split", "held-out", "--n", "40", "--kinds", "noise"]
    assert main([*args, "--repo", str(repo), "--data-dir", str(shared_data_dir)]) == 2
    assert "use --split test" in capsys.readouterr().err
