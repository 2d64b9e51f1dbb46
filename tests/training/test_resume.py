"""Checkpoints and --resume: an interrupted run ends where an uninterrupted one does, and a bad
checkpoint is refused without being touched."""

import hashlib
import pickle
import shutil

import pytest
import torch

from gga_cli import main
from gga_training.checkpoint import load_checkpoint, save_checkpoint
from gga_training.recipe import recipe_from_dict
from gga_training.train import train
from models.errors import CheckpointError
from models.repository import load_model_folder


class Interrupted(Exception):
    """Stands in for a kill between two epochs."""


def _recipe(**optim):
    """A tiny recipe with every piece a checkpoint must carry: shuffles, augmentation, fast-AT
    random starts (the run's generator), dropout-free momentum buffers, a one-cycle schedule."""
    return recipe_from_dict(
        {
            "name": "tiny-resume",
            "architecture": "lenet",
            "dataset": "mnist",
            "config": {"conv1_channels": 4, "conv2_channels": 8, "hidden": 32},
            "data": {"train_limit": 400, "val_fraction": 0.25},
            "augment": {"crop_padding": 2, "hflip": True},
            "optim": {
                "lr": 0.05,
                "nesterov": True,
                "weight_decay": 5e-4,
                "batch_size": 50,
                "epochs": 3,
                "schedule": "onecycle",
                **optim,
            },
            "adversarial": {"method": "fgsm-rs", "eps": 0.1, "alpha": 0.5},
            "runtime": {"channels_last": True},
        }
    )


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _interrupt_after(epoch):
    def hook(state):
        if state.epoch == epoch:
            raise Interrupted

    return hook


def test_resumed_run_equals_uninterrupted_run(tmp_path, shared_data_dir):
    whole = train(
        _recipe(),
        tmp_path / "whole",
        data_dir=shared_data_dir,
        progress=False,
        checkpoint=tmp_path / "whole.pt",
    )

    ckpt = tmp_path / "cut.pt"
    with pytest.raises(Interrupted):
        train(
            _recipe(),
            tmp_path / "cut",
            data_dir=shared_data_dir,
            progress=False,
            checkpoint=ckpt,
            on_epoch_end=_interrupt_after(1),
        )
    assert load_checkpoint(ckpt).epoch == 1
    assert not (tmp_path / "cut").exists()
    # Something else runs in between and moves torch's global random state along.
    torch.rand(1000)
    resumed = train(
        _recipe(),
        tmp_path / "cut",
        data_dir=shared_data_dir,
        progress=False,
        checkpoint=ckpt,
        resume=True,
    )

    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=1e-9)
    wa = load_model_folder(tmp_path / "whole").module.state_dict()
    wb = load_model_folder(tmp_path / "cut").module.state_dict()
    for name in wa:
        # Up to float rounding, as test_train's reproducibility test explains.
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-6, msg=name)
    assert resumed.card.metrics["best_epoch"] == whole.card.metrics["best_epoch"]
    assert resumed.card.metrics["epochs_per_hour"] > 0


def test_resume_of_a_finished_run_writes_the_same_model(tmp_path, shared_data_dir):
    ckpt = tmp_path / "run.pt"
    first = train(
        _recipe(epochs=1), tmp_path / "a", data_dir=shared_data_dir, progress=False, checkpoint=ckpt
    )
    again = train(
        _recipe(epochs=1),
        tmp_path / "b",
        data_dir=shared_data_dir,
        progress=False,
        checkpoint=ckpt,
        resume=True,
    )
    assert again.card.weights_sha256 == first.card.weights_sha256


def test_a_corrupt_checkpoint_is_refused_and_left_in_place(tmp_path, shared_data_dir):
    ckpt = tmp_path / "run.pt"
    train(
        _recipe(epochs=1), tmp_path / "m", data_dir=shared_data_dir, progress=False, checkpoint=ckpt
    )
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # a copy cut short
    before = _digest(ckpt)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(
            _recipe(epochs=1),
            tmp_path / "m2",
            data_dir=shared_data_dir,
            progress=False,
            checkpoint=ckpt,
            resume=True,
        )
    assert _digest(ckpt) == before
    assert not (tmp_path / "m2").exists()


def test_resuming_with_another_recipe_is_refused_and_leaves_the_checkpoint(
    tmp_path, shared_data_dir
):
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupted):
        train(
            _recipe(),
            tmp_path / "m",
            data_dir=shared_data_dir,
            progress=False,
            checkpoint=ckpt,
            on_epoch_end=_interrupt_after(1),
        )
    before = _digest(ckpt)
    with pytest.raises(CheckpointError, match=r"different recipe \(optim.lr differ"):
        train(
            _recipe(lr=0.1),
            tmp_path / "m",
            data_dir=shared_data_dir,
            progress=False,
            checkpoint=ckpt,
            resume=True,
        )
    # How it runs may change between sessions (on a copy: resuming rewrites the checkpoint).
    shutil.copy(ckpt, tmp_path / "copy.pt")
    other_runtime = recipe_from_dict({**_recipe().to_dict(), "runtime": {"channels_last": False}})
    result = train(
        other_runtime,
        tmp_path / "m",
        data_dir=shared_data_dir,
        progress=False,
        checkpoint=tmp_path / "copy.pt",
        resume=True,
    )
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    with pytest.raises(CheckpointError, match="run of 3 epochs, not 5"):
        train(
            _recipe(),
            tmp_path / "m",
            data_dir=shared_data_dir,
            epochs=5,
            progress=False,
            checkpoint=ckpt,
            resume=True,
        )
    assert _digest(ckpt) == before


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, shared_data_dir):
    ckpt = tmp_path / "run.pt"
    train(
        _recipe(epochs=1), tmp_path / "m", data_dir=shared_data_dir, progress=False, checkpoint=ckpt
    )
    before = _digest(ckpt)
    state = load_checkpoint(ckpt)
    state.history = [{"not": lambda: None}]  # torch.save cannot pickle a lambda: the write fails
    with pytest.raises((pickle.PicklingError, AttributeError)):  # by Python version
        save_checkpoint(ckpt, state)
    assert _digest(ckpt) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cli_resume_and_refusal_to_overwrite(tmp_path, shared_data_dir, capsys):
    recipe_file = tmp_path / "tiny.toml"
    recipe_file.write_text(
        'name = "tiny-cli"\narchitecture = "lenet"\ndataset = "mnist"\n'
        "[config]\nconv1_channels = 4\nconv2_channels = 8\nhidden = 32\n"
        "[data]\ntrain_limit = 200\nval_fraction = 0.25\n"
        "[optim]\nbatch_size = 50\nepochs = 1\n"
    )
    out = tmp_path / "repo" / "tiny-cli"
    out.parent.mkdir()
    args = ["train", str(recipe_file), "--out", str(out), "--data-dir", str(shared_data_dir)]
    assert main([*args, "--no-progress"]) == 0
    ckpt = out.with_name("tiny-cli.checkpoint.pt")
    assert load_checkpoint(ckpt).epoch == 1
    assert main([*args, "--no-progress"]) == 2
    assert "--resume to continue it" in capsys.readouterr().err
    shutil.rmtree(out)
    assert main([*args, "--no-progress", "--resume"]) == 0
    assert load_model_folder(out).card.metrics["best_epoch"] == 1
    ckpt.write_bytes(b"not a checkpoint")
    assert main([*args, "--no-progress", "--resume"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert ckpt.read_bytes() == b"not a checkpoint"
