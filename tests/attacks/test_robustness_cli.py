"""``gga robustness``: clean and PGD accuracy, recorded into a card on request."""

import json
import shutil

from gga_cli import main
from models.repository import ModelRepository


def test_pgd_lowers_accuracy_and_is_recorded(tmp_path, shared_data_dir, capsys):
    shutil.copytree(ModelRepository().path("mnist-lenet-low"), tmp_path / "mnist-lenet-low")
    code = main(
        [
            "robustness",
            "mnist-lenet-low",
            "--repo",
            str(tmp_path),
            "--eps",
            "0.3",
            "--steps",
            "5",
            "--n",
            "40",
            "--data-dir",
            str(shared_data_dir),
            "--record",
        ]
    )
    assert code == 0
    assert "pgd_linf_0.3_accuracy" in capsys.readouterr().out
    card = json.loads((tmp_path / "mnist-lenet-low" / "card.json").read_text())
    figures = card["metrics"]["robustness"]
    assert figures["test_images"] == 40
    assert figures["pgd_linf_0.3_accuracy"] < figures["clean_accuracy"]
    ModelRepository(tmp_path).load("mnist-lenet-low")  # the card still matches its weights


def test_unknown_model_is_a_user_error(capsys):
    assert main(["robustness", "no-such-model"]) == 2
    assert "no model 'no-such-model'" in capsys.readouterr().err


def test_budgets_can_be_fractions_and_bad_ones_are_user_errors(capsys):
    from gga_cli.robustness import parse_budgets

    assert parse_budgets("0.3, 8/255") == [("0.3", 0.3), ("8/255", 8 / 255)]
    for bad in ("eight", "1/0", "0", "2"):
        assert main(["robustness", "mnist-lenet-low", "--eps", bad]) == 2
        assert "--eps" in capsys.readouterr().err
