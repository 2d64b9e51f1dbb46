"""`gga import` of a many-class model: the classes read are measured or given, kept in the card
and served before any fit; labels and --top-n are checked against the model's outputs."""

import pytest
import torch

from detectors.pipeline import serving_pipeline
from detectors.row_cost import budget_seconds
from gga_cli import main
from models.repository import ModelRepository
from tests.helpers.models import TinyCNN, seeded

CLASSES = 30


def _files(tmp_path, labels: int = CLASSES):
    model = seeded(TinyCNN, num_classes=CLASSES).eval()
    path = tmp_path / "net.pt"
    torch.jit.trace(model, torch.rand(2, 1, 28, 28)).save(str(path))
    names = tmp_path / "labels.txt"
    names.write_text("".join(f"kind {i}\n" for i in range(labels)))
    return path, names


def _import(path, names, repo, *extra: str) -> int:
    repo.mkdir(exist_ok=True)
    args = ["import", str(path), "--name", "many", "--repo", str(repo), "--labels", str(names)]
    return main([*args, "--input-shape", "1,28,28", "--force", *extra])


def test_a_given_top_n_is_kept_in_the_card_and_served_before_any_fit(tmp_path, capsys) -> None:
    path, names = _files(tmp_path)
    repo = tmp_path / "repo"
    assert _import(path, names, repo, "--top-n", "12") == 0
    printed = capsys.readouterr()
    assert "top 12 classes read" in printed.out
    assert "classes read per input: the 12 most probable classes: --top-n 12" in printed.err
    loaded = ModelRepository(repo).load("many")
    assert loaded.card.top_n == 12 and loaded.card.engine["num_classes"] == CLASSES
    pipeline = serving_pipeline(loaded.path, loaded.module, loaded.card)
    assert pipeline.scorer is None
    out = pipeline(torch.rand(3, 1, 28, 28))
    assert out.csm.shape == (3, 12, 12) and out.classes.shape == (3, 12)
    assert (out.classes[:, 0] == out.labels).all()  # most probable first


def test_auto_measures_the_engine_and_records_what_it_measured(tmp_path, capsys) -> None:
    path, names = _files(tmp_path)
    repo = tmp_path / "repo"
    assert _import(path, names, repo) == 0
    err = capsys.readouterr().err
    assert "measuring the engine's cost at 30 classes" in err and "forward at batch 1" in err
    engine = ModelRepository(repo).card("many").engine
    assert {"1", "8"} <= set(engine["ms_per_image"]) and engine["forward_ms"] > 0
    assert engine["top_n"] is None or 10 <= engine["top_n"] < CLASSES
    # A small model's forward is well under a millisecond: nearly the whole 0.25 s allowance.
    expected_ms = budget_seconds(engine["forward_ms"] / 1e3) * 1e3
    assert engine["budget_ms"] == pytest.approx(expected_ms, abs=0.01)  # stored to 0.01 ms
    assert engine["budget_ms"] > 240.0 and engine["fade_s"] == 0.05


def test_bad_top_n_and_labels_are_refused_and_nothing_is_written(tmp_path, capsys) -> None:
    path, names = _files(tmp_path)
    repo = tmp_path / "repo"
    assert _import(path, names, repo, "--top-n", "31") == 2
    assert "--top-n 31: the model has only 30 classes" in capsys.readouterr().err
    assert _import(path, names, repo, "--top-n", "none") == 2
    assert "--top-n must be auto, all or a positive number" in capsys.readouterr().err
    fewer = _files(tmp_path, labels=29)[1]
    assert _import(path, fewer, repo, "--top-n", "all") == 2
    assert "29 class names, but the model outputs 30 logits" in capsys.readouterr().err
    more = _files(tmp_path, labels=31)[1]
    assert _import(path, more, repo, "--top-n", "all") == 2
    assert "31 class names, but the model outputs 30 logits" in capsys.readouterr().err
    assert not (repo / "many").exists()


def test_a_block_given_at_import_is_kept_in_the_card_and_served(tmp_path, capsys) -> None:
    from tests.helpers.imported import export_onnx

    model = seeded(TinyCNN, num_classes=CLASSES).eval()
    path = export_onnx(model, tmp_path / "net.onnx", (1, 28, 28), "dynamo")
    names = _files(tmp_path)[1]
    repo = tmp_path / "repo"
    assert _import(path, names, repo, "--top-n", "12", "--saliency-layer", "0") == 0
    assert "top 12 classes read at block 0" in capsys.readouterr().out
    loaded = ModelRepository(repo).load("many")
    assert loaded.card.saliency_layer == 0 and loaded.card.top_n == 12
    pipeline = serving_pipeline(loaded.path, loaded.module, loaded.card)
    assert pipeline.options.saliency_layer == 0 and not pipeline.options.channel_max
    out = pipeline(torch.rand(3, 1, 28, 28), saliency=True)
    assert out.csm.shape == (3, 12, 12)
    assert out.saliency.shape == (3, 12, 8 * 28 * 28)  # every channel of the first block


def test_a_block_the_model_lacks_or_a_bad_value_is_refused(tmp_path, capsys) -> None:
    path, names = _files(tmp_path)  # TorchScript: no leaf modules to find a block in
    repo = tmp_path / "repo"
    assert _import(path, names, repo, "--top-n", "12", "--saliency-layer", "0") == 2
    assert (
        "--saliency-layer 0: saliency_layer=0 needs the model's blocks" in capsys.readouterr().err
    )
    assert _import(path, names, repo, "--saliency-layer", "deep") == 2
    assert "--saliency-layer must be auto, input or a block's index" in capsys.readouterr().err
    assert not (repo / "many").exists()
