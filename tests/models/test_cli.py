"""The model commands of the ``gga`` CLI, run as a user runs them (a real subprocess)."""

import json

import pytest

from models.repository import ModelRepository
from tests.helpers.cli import gga


def test_models_lists_the_shipped_zoo():
    out = gga("models")
    assert out.returncode == 0, out.stderr
    for name in ModelRepository().names():
        assert name in out.stdout
    listed = json.loads(gga("models", "--json").stdout)
    assert {c["name"] for c in listed} == set(ModelRepository().names())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "--repo", "/nonexistent/repo"], "does not exist"),
        (["predict", "no-such-model", "x.png"], "no model 'no-such-model'"),
        (["train", "/nonexistent/recipe.toml"], "not found"),
        (["export", "no-such-model"], "no model"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message):
    out = gga(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_predict_prints_the_trust_score_and_flag():
    # Before: label and probabilities only, even with --json.
    from pathlib import Path

    from detectors.pipeline import load_pipeline
    from models.imaging import load_image_file

    images = [str(p) for p in sorted(Path("examples").glob("*.png"))]
    out = gga("predict", "fashion-mnist-cnn", *images, "--json")
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    loaded = ModelRepository().load("fashion-mnist-cnn")
    pipeline = load_pipeline(loaded.path, loaded.module, loaded.card.weights_sha256)
    assert document["alpha"] == pipeline.alpha
    import torch

    x = torch.stack([load_image_file(p, input_shape=loaded.card.input_shape) for p in images])
    expected = pipeline(x)
    for i, pred in enumerate(document["predictions"]):
        assert 0 < pred["trust_score"] <= 1
        assert pred["trust_score"] == pytest.approx(float(expected.trust[i]), abs=1e-5)
        assert pred["flagged"] == bool(expected.flagged[i])
    table = gga("predict", "fashion-mnist-cnn", images[0])
    assert table.returncode == 0 and "trust " in table.stdout and "alpha 0.05" in table.stdout
