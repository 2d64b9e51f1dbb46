"""Many classes on real images: the 100-class two-digit MNIST model fitted on a user's folder,
the number of classes read chosen by detection, and the errors a user meets."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from detectors.engine import EngineOptions, GradientEngine
from gga_cli import main
from gga_lab.collect import collect_view_inputs
from gga_lab.top_n import candidates, choose_top_n
from gga_lab.untrusted import make_training_untrusted
from models.data import load_dataset
from models.repository import DEFAULT_REPOSITORY, ModelRepository

NAME = "two-digit-mnist"


@pytest.fixture(scope="module")
def two_digit(shared_data_dir):
    if not (DEFAULT_REPOSITORY / NAME / "weights.safetensors").is_file():
        pytest.skip(f"zoo model {NAME} not present")
    loaded = ModelRepository(DEFAULT_REPOSITORY).load(NAME)
    train = load_dataset(NAME, "train", data_dir=shared_data_dir, limit=2000)
    return loaded, train


def test_candidates_double_from_ten_up_to_the_ceiling() -> None:
    assert candidates(10) == [10]
    assert candidates(64) == [10, 20, 40, 64]
    assert candidates(80) == [10, 20, 40, 80]


def test_the_fewest_rows_that_detect_as_well_are_chosen(two_digit) -> None:
    loaded, train = two_digit
    model, x, y = loaded.module, train.float(), train.y
    engine = GradientEngine(model, EngineOptions(top_n=40, strategy="batched"))

    def correct(part: slice):
        inputs = collect_view_inputs(engine, x[part], 256, progress=False)
        return inputs.take(inputs.predicted == y[part].numpy()), x[part], y[part]

    fit, _, _ = correct(slice(0, 700))
    tune, x_tune, y_tune = correct(slice(700, 950))
    made = make_training_untrusted(
        model, x_tune, y_tune, eps=0.3, seed=0, kinds=("fgsm", "noise"), progress=False
    )
    untrusted = {k: collect_view_inputs(engine, v, 256, progress=False) for k, v in made.items()}
    choice = choose_top_n(40, fit, tune, untrusted)
    assert set(choice.measured) == {10, 20, 40}
    best = max(choice.measured.values())
    assert choice.measured[choice.top_n] >= best - 0.01
    assert all(v < best - 0.01 for n, v in choice.measured.items() if n < choice.top_n)
    assert all(0.0 <= v <= 1.0 for v in choice.measured.values())
    assert choice.to_dict()["chosen"] == choice.top_n


def _user_folder(train, root, per_class: int):
    """``per_class`` pairs of each class as PNGs in class folders, as a user would bring them."""
    counts: dict[int, int] = {}
    for image, label in zip(train.x, train.y.tolist(), strict=True):
        if counts.get(label, 0) == per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        folder = root / train.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / f"{counts[label]:03d}.png")
    assert len(counts) == 100 and set(counts.values()) == {per_class}
    return root


def test_fit_on_twenty_images_per_class_serves_every_view(two_digit, tmp_path, capsys) -> None:
    loaded, train = two_digit
    repo = tmp_path / "repo"
    shutil.copytree(loaded.path, repo / NAME, ignore=shutil.ignore_patterns("detector.json"))
    folder = _user_folder(train, tmp_path / "photos", 20)
    common = ["--repo", str(repo), "--data", str(folder)]
    # Bad input first: more classes than the model has, a block it does not have.
    assert main(["fit", NAME, "--top-n", "101", *common]) == 2
    assert "has only 100 classes" in capsys.readouterr().err
    assert main(["fit", NAME, "--saliency-layer", "9", *common]) == 2
    assert "--saliency-layer 9: saliency_layer=9 is out of range" in capsys.readouterr().err
    fit = ["fit", NAME, "--top-n", "20", "--pgd-steps", "5", "--untrusted-kinds", "fgsm,noise"]
    assert main([*fit, *common, "--no-rescale"]) == 0
    out = capsys.readouterr().out
    assert "the top 20 classes read per input" in out
    detector = json.loads((repo / NAME / "detector.json").read_text())
    assert detector["engine_options"]["top_n"] == 20
    offered = detector["provenance"]["choices"]["views_offered"]
    assert {"gga-paper", "gga-csm", "mahalanobis", "knn", "blocks"} <= set(offered)
    # Every view offered was fitted on these few images a class and scores an input.
    from detectors.pipeline import serving_pipeline

    served = ModelRepository(repo).load(NAME)
    pipeline = serving_pipeline(served.path, served.module, served.card)
    result = pipeline(train.float()[:8])
    assert result.csm.shape == (8, 20, 20)
    assert np.isfinite(result.trust).all()
    assert torch.equal(torch.as_tensor(result.classes[:, 0]), torch.as_tensor(result.labels))
