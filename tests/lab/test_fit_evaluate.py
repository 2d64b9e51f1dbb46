"""End to end: fit a trust scorer on a tiny trained model, evaluate it, and the CLI commands."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from detectors.base import DetectorFitError
from detectors.views import ViewUnavailableError
from gga_cli import main
from gga_lab.evaluate import BASELINES, TRUST, EvalConfig, evaluate_model, view_row
from gga_lab.fit import (
    HELD_OUT,
    TRAINING,
    FitConfig,
    fit_splits,
    fit_trust_scorer,
    indices_digest,
)
from gga_lab.report import write_report
from models.repository import DEFAULT_REPOSITORY, ModelRepository
from tests.helpers.models import TinyCNN, TinyLinear, seeded

SMALL = {"n_fit": 400, "n_view_cal": 150, "n_tune": 150, "n_cal": 150, "pgd_steps": 10}


def _fit_tiny(t, config: FitConfig):
    """The tiny MNIST model's trust scorer, its last 300 training images held out."""
    return fit_trust_scorer(
        t.model,
        t.x_train,
        t.y_train,
        model_name="tiny",
        weights_sha256="0" * 64,
        config=config,
        dataset="mnist",
        held_out=torch.arange(len(t.x_train) - 300, len(t.x_train)),
        progress=False,
    )


def _all_parts(splits) -> list[int]:
    return [i for idx in splits.parts().values() for i in idx.tolist()]


def test_parts_are_disjoint_seeded_and_calibrate_on_held_out_images() -> None:
    config = FitConfig(n_fit=500, n_view_cal=100, n_tune=100, n_cal=200)
    pool = torch.arange(0, 1000, 2)  # 500 images the model never trained on
    splits = fit_splits(1000, pool, config)
    indices = _all_parts(splits)
    assert len(indices) == len(set(indices)) and max(indices) < 1000
    assert set(splits.cal.tolist()) <= set(pool.tolist()) and len(splits.cal) == 200
    # 300 held-out images left: enough for the views' calibration and the tune part.
    assert set(splits.tune.tolist()) | set(splits.view_cal.tolist()) <= set(pool.tolist())
    assert splits.sources == {
        "cal": HELD_OUT,
        "view_cal": HELD_OUT,
        "tune": HELD_OUT,
        "fit": TRAINING,
    }
    assert not set(splits.fit.tolist()) & set(pool.tolist())
    again = fit_splits(1000, pool, config)
    assert all(
        torch.equal(a, b)
        for a, b in zip(splits.parts().values(), again.parts().values(), strict=True)
    )
    assert not torch.equal(fit_splits(1000, pool, config, seed=1).cal, splits.cal)


def test_a_small_held_out_pool_all_goes_to_the_final_calibration() -> None:
    config = FitConfig(n_fit=5000, n_view_cal=100, n_tune=100, n_cal=2000)
    pool = torch.arange(900, 1000)
    splits = fit_splits(1000, pool, config)
    assert sorted(splits.cal.tolist()) == pool.tolist()
    assert splits.sources["tune"] == splits.sources["view_cal"] == TRAINING
    assert len(splits.tune) == len(splits.view_cal) == 100
    indices = _all_parts(splits)
    assert len(indices) == len(set(indices))
    with pytest.raises(DetectorFitError, match="held-out"):
        fit_splits(1000, torch.empty(0, dtype=torch.long), config)


def test_fit_then_evaluate_the_fused_score_beats_its_best_view(
    tiny_mnist, shared_data_dir, tmp_path
) -> None:
    t = tiny_mnist
    scorer = _fit_tiny(t, FitConfig(**SMALL, strategy="vmap"))
    p = scorer.provenance
    assert p["calibration_inputs"] == HELD_OUT and p["n_cal"] > 100
    assert set(p["choices"]["fusion"]["scores"]) >= {"fisher", "cauchy", "logistic"}
    assert set(p["choices"]["rescale_logits"]["measured"]) == {"True", "False"}
    assert set(p["untrusted"]["kinds"]) >= {"fgsm", "pgd", "noise_images", "corruption"}
    cfg = EvalConfig(
        n=150,
        pgd_steps=10,
        n_baseline_fit=300,
        kinds=("pgd_linf", "pgd_linf_min", "rotation", "ood_noise", "ood_photos", "ood_dataset"),
        examples=2,
        drawn="the tiny fixture's test images",
    )
    result = evaluate_model(
        t.model,
        scorer,
        model_name="tiny",
        dataset="mnist",
        train=(t.x_train, t.y_train),
        test=(t.x_test, t.y_test),
        cfg=cfg,
        data_dir=str(shared_data_dir),
        progress=False,
    )
    assert result.kinds["pgd_linf"]["n_untrusted"] > 50
    views = [view_row(v) for v in scorer.views]
    assert set(result.tnr) == {TRUST, *views, *BASELINES}
    # On a mixed set of untrusted inputs the fused score is as good as any view alone, within
    # the sampling error of 133 clean inputs (one standard error of an AUROC near 0.93 is about
    # 0.02). Measured: fused 0.927, best view (mahalanobis) 0.948, energy 0.931; the fusion was
    # chosen on untrusted kinds made from training images, none of which is in this mix. The
    # floor at the zoo's scale (1,000 test inputs) is measured by `gga evaluate` (docs/results.md).
    best_view = max(result.pooled[v]["AUROC"] for v in views)
    assert result.pooled[TRUST]["AUROC"] >= best_view - 0.03, (result.pooled, scorer.view_names)
    assert result.auroc[TRUST]["pgd_linf_min"] > 0.6
    assert all(1 <= r <= len(result.tnr) for r in result.ranks[TRUST].values())
    assert 0.0 <= result.false_alarm["rate"] <= 0.2  # alpha 0.05 on ~140 inputs: loose bound
    paths = write_report(result, tmp_path, command="gga evaluate tiny")
    data = json.loads(paths["json"].read_text())
    assert data["pooled"][TRUST]["AUROC"] == pytest.approx(result.pooled[TRUST]["AUROC"])
    report = paths["markdown"].read_text()
    assert f"| **{TRUST}** |" in report and "| k-NN |" in report and "mean rank" in report
    assert f"Evaluation: {result.n_clean} test inputs (the tiny fixture's test images)" in report
    assert paths["roc"].stat().st_size > 0 and paths["examples_pgd_linf"].stat().st_size > 0


def test_the_fusion_learns_only_from_training_images_of_the_tune_part(tiny_mnist) -> None:
    t = tiny_mnist
    held_out = torch.arange(len(t.x_train) - 300, len(t.x_train))
    config = FitConfig(**SMALL, strategy="vmap", rescale="on", fusion="logistic")
    scorer = _fit_tiny(t, config)
    parts = scorer.provenance["parts"]
    splits = fit_splits(len(t.x_train), held_out, config)
    for name, idx in splits.parts().items():
        assert parts[name]["indices_sha256"] == indices_digest(idx)
    # The untrusted inputs the logistic fusion is trained on are made from the tune part, and
    # the tune part is made of training images, disjoint from the final calibration.
    assert scorer.provenance["untrusted"]["made_from"] == "tune"
    assert max(splits.tune.tolist()) < len(t.x_train)
    assert not set(splits.tune.tolist()) & set(splits.cal.tolist())
    assert scorer.fusion.kind == "logistic" and scorer.fusion.coef is not None


def test_fit_refuses_too_few_correct_inputs(tiny_mnist) -> None:
    untrained = seeded(TinyCNN, seed=3)
    wrong_labels = (tiny_mnist.y_train + 1) % 10  # nothing is "correct"
    with pytest.raises(DetectorFitError, match="raise --n-fit"):
        fit_trust_scorer(
            untrained,
            tiny_mnist.x_train[:400],
            wrong_labels[:400],
            model_name="u",
            weights_sha256="0" * 64,
            config=FitConfig(n_fit=100, n_view_cal=50, n_tune=50, n_cal=50, strategy="vmap"),
            progress=False,
        )


def test_views_that_need_features_are_refused_for_a_model_without_them(tiny_mnist) -> None:
    model = seeded(TinyLinear, in_shape=(1, 28, 28), num_classes=10)
    with pytest.raises(
        ViewUnavailableError,
        match=r"need what linear does not have: penultimate features.*--views gga-paper",
    ):
        fit_trust_scorer(
            model,
            tiny_mnist.x_train[:400],
            tiny_mnist.y_train[:400],
            model_name="linear",
            weights_sha256="0" * 64,
            config=FitConfig(views=("gga-csm", "knn"), strategy="vmap"),
            progress=False,
        )


def test_unknown_views_and_fusions_are_named() -> None:
    with pytest.raises(DetectorFitError, match="unknown views \\['vibes'\\]"):
        FitConfig(views=("gga-csm", "vibes"))
    with pytest.raises(DetectorFitError, match="unknown fusion 'mean'"):
        FitConfig(fusion="mean")
    with pytest.raises(DetectorFitError, match="rescale must be one of"):
        FitConfig(rescale="maybe")
    with pytest.raises(DetectorFitError, match="criterion must be one of auroc, tnr"):
        FitConfig(criterion="accuracy")


@pytest.fixture
def zoo_copy(tmp_path):
    name = "mnist-lenet-low"
    if not (DEFAULT_REPOSITORY / name / "weights.safetensors").is_file():
        pytest.skip(f"zoo model {name} not present")
    dest = tmp_path / "repo" / name
    shutil.copytree(DEFAULT_REPOSITORY / name, dest, ignore=shutil.ignore_patterns("detector.json"))
    return tmp_path / "repo", name


def test_cli_fit_and_evaluate(zoo_copy, shared_data_dir, tmp_path, capsys, monkeypatch) -> None:
    repo, name = zoo_copy
    common = ["--repo", str(repo), "--data-dir", str(shared_data_dir)]
    assert main(["evaluate", name, *common]) == 2
    assert f"gga fit {name}" in capsys.readouterr().err
    # A memory budget too small for one image's pass is refused with budget and need.
    monkeypatch.setenv("GGA_ENGINE_MEMORY_GB", "0.0001")
    assert main(["fit", name, *common]) == 2
    assert re.search(r"budget of 0.0001 GB cannot hold .* needs about", capsys.readouterr().err)
    monkeypatch.delenv("GGA_ENGINE_MEMORY_GB")
    fit = [
        "fit",
        name,
        "--n-fit",
        "300",
        "--n-view-cal",
        "100",
        "--n-tune",
        "100",
        "--n-cal",
        "100",
        "--bins",
        "20",
        "--no-rescale",
        "--pgd-steps",
        "5",
        "--views",
        "gga-csm,energy,knn",
        "--view-tail",
        "exponential",
    ]
    assert main([*fit, *common]) == 0
    printed = capsys.readouterr()
    assert "wrote" in printed.out
    # The batch size comes from the measured memory of one image's pass (tiny here: 128).
    assert re.search(r"batch size 128: .* saved per input .* within 2 GB", printed.err)
    saved = json.loads((repo / name / "detector.json").read_text())
    assert saved["format_version"] == 2
    assert saved["model"]["weights_sha256"] == ModelRepository(repo).card(name).weights_sha256
    assert saved["engine_options"]["rescale_logits"] is False  # served and evaluated that way
    assert set(saved["views"]) == {"gga-csm", "energy", "knn"}
    # Calibrated on the 500 images the card's recipe held out from training.
    assert saved["provenance"]["calibration_inputs"] == "held out from training"
    assert saved["provenance"]["parts"]["cal"]["drawn"] == 100
    assert all(v["calibration"]["tail"]["kind"] == "exponential" for v in saved["views"].values())
    assert "tail" not in saved["calibration"]  # the trust score itself stays plainly conformal
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
        "--save-scores",
        *common,
    ]
    assert main(args) == 0
    assert (out / "results.md").is_file() and (out / "roc.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert np.isfinite(results["pooled"][TRUST]["AUROC"])
    assert results["config"]["drawn"] == "the first 40 in file order"  # MNIST's shuffled files

    # The saved scores reproduce the report's figures, and the offline comparison reads them.
    from gga_lab.analysis import fusion_offline

    scores = fusion_offline.load_scores(out / "scores.npz")
    assert set(scores[TRUST]) == {"clean", "pgd_linf", "noise"}
    again = fusion_offline.measure(scores[TRUST])
    assert again["pooled"] == pytest.approx(100 * results["pooled"][TRUST]["AUROC"], abs=0.01)
    argv = [str(repo / name), str(out / "scores.npz"), "--json", str(tmp_path / "offline.json")]
    argv += ["--subset", "gga-csm+knn", "--median-p"]
    assert main(["lab", "fusion", *argv]) == 0
    printed = capsys.readouterr()
    assert "fisher (tail exponential)" in printed.out and "per-kind floor" in printed.out
    # Clean test inputs (the first column) sit mid-calibration, median p near 0.5, in every view.
    medians = {
        line.split()[1]: [float(c) for c in line.split()[2:]]
        for line in printed.out.splitlines()
        if line.startswith("view ") and len(line.split()) == 5 and "." in line.split()[2]
    }
    assert set(medians) == {"gga-csm", "energy", "knn"}
    assert all(0.3 < m[0] < 0.7 for m in medians.values()), medians
    # The shipped fusion recomputed from the saved scores gives the evaluation's trust score.
    assert "warning" not in printed.err
    shipped = f"shipped {saved['fusion']['kind']} (tail exponential)"
    offline = json.loads((tmp_path / "offline.json").read_text())
    assert offline["rows"][shipped] == pytest.approx(offline["rows"]["shipped trust score"])
    assert {"fisher gga-csm+knn (tail none)", "tippett gga-csm+knn (tail none)"} <= set(
        offline["rows"]
    )
    assert main(["lab", "fusion", *argv[:2], "--subset", "gga-csm+nope"]) == 2
    assert "['nope'] not in this detector" in capsys.readouterr().err
    assert set(offline["floor_budget"]["per_kind"]) == {"pgd_linf", "noise"}
    assert 0.0 <= offline["floor_budget"]["union_false_alarms"] <= 0.10


def test_cli_fit_without_a_recipe_calibrates_on_training_inputs_and_says_so(
    zoo_copy, shared_data_dir, capsys
) -> None:
    repo, name = zoo_copy
    card_path = repo / name / "card.json"
    card = json.loads(card_path.read_text())
    card["recipe"] = {}  # a model imported from elsewhere: which images trained it is unknown
    card_path.write_text(json.dumps(card))
    fit = ["fit", name, "--n-fit", "200", "--n-view-cal", "100", "--n-tune", "100"]
    fit += ["--n-cal", "100", "--bins", "20", "--rescale", "on", "--pgd-steps", "5"]
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
    from gga_training.splits import held_out_indices
    from models.data import load_dataset

    repo, name = fitted_zoo_copy
    common = ["--repo", str(repo), "--data-dir", str(shared_data_dir)]
    out = tmp_path / "eval"
    args = ["evaluate", name, "--split", "held-out", "--n", "60", "--kinds", "noise"]
    assert main([*args, "--out-dir", str(out), *common]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["split"] == "held-out"
    assert result["config"]["drawn"] == "shuffled with seed 0, the first 60"
    report = (out / "results.md").read_text()
    assert "60 held-out training inputs (shuffled with seed 0, the first 60)" in report
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


def test_the_squeeze_view_is_fitted_on_request_and_served(tiny_mnist) -> None:
    from detectors.pipeline import GGAPipeline
    from detectors.views import available_views

    assert "squeeze" in available_views(True)
    t = tiny_mnist
    scorer = _fit_tiny(t, FitConfig(**SMALL, views=("gga-csm", "msp", "squeeze"), fusion="fisher"))
    assert scorer.engine_options["squeeze"] is True and "squeeze" in scorer.view_names
    out = GGAPipeline(t.model, scorer)(t.x_test[:16])
    assert out.views["squeeze"].shape == (16,) and np.isfinite(out.trust).all()
