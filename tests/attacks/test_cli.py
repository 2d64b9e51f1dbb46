"""``gga attack``: a real run on a saved model, its outputs, and every user error as one line."""

import numpy as np
import pytest
import torch

from gga_cli import main


@pytest.fixture(scope="module")
def repo(lenet_repo):
    return lenet_repo


def _run(capsys, *argv):
    code = main(["attack", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_pgd_run_prints_rates_and_writes_npz_and_png(repo, shared_data_dir, tmp_path, capsys):
    out_file = tmp_path / "pgd.npz"
    code, out, err = _run(
        capsys,
        "--model",
        "mnist-small",
        "--repo",
        repo,
        "--attack",
        "pgd",
        "--eps",
        0.2,
        "--steps",
        10,
        "--n",
        40,
        "--data-dir",
        shared_data_dir,
        "--out",
        out_file,
        "--save-png",
        tmp_path / "png",
        "--batch-size",
        16,
    )
    assert code == 0, err
    assert "success rate" in out and "accuracy" in out and "l_inf 0.2" in out
    data = np.load(out_file)
    assert {"x_adv", "x", "y", "pred_adv", "success"} <= set(data.files)
    assert data["x_adv"].shape == (40, 1, 28, 28) and data["success"].dtype == bool
    assert np.abs(data["x_adv"] - data["x"]).max() <= 0.2 + 1e-6
    assert np.array_equal(data["success"], data["pred_adv"] != data["y"])
    assert data["success"].mean() > 0.8
    assert (tmp_path / "png" / "pgd.png").stat().st_size > 1000


def test_targeted_run_on_an_npz(repo, mnist, tmp_path, capsys):
    npz = tmp_path / "in.npz"
    x8 = (mnist["test"].x[:12] * 255).round().to(torch.uint8).squeeze(1).numpy()  # (N, H, W)
    np.savez(npz, x=x8, y=mnist["test"].y[:12].numpy())
    code, _out, err = _run(
        capsys,
        "--model",
        "mnist-small",
        "--repo",
        repo,
        "--attack",
        "bim",
        "--eps",
        0.3,
        "--steps",
        20,
        "--targeted",
        "given",
        "--target",
        3,
        "--n",
        12,
        "--npz",
        npz,
        "--out",
        tmp_path / "out.npz",
    )
    assert code == 0, err
    data = np.load(tmp_path / "out.npz")
    assert (data["target"] == 3).all()
    assert np.array_equal(data["success"], data["pred_adv"] == 3)


def test_csa_against_a_top_n_detector(repo, mnist, tmp_path, capsys):
    npz = tmp_path / "in.npz"
    x8 = (mnist["test"].x[:4] * 255).round().to(torch.uint8).squeeze(1).numpy()
    np.savez(npz, x=x8, y=mnist["test"].y[:4].numpy())
    argv = ["--model", "mnist-small", "--repo", repo, "--attack", "csa", "--steps", 3]
    code, out, err = _run(capsys, *argv, "--top-n", 4, "--npz", npz, "--out", tmp_path / "o.npz")
    assert code == 0, err
    assert "csa on mnist-small" in out and (tmp_path / "o.npz").exists()


def test_universal_run_fits_on_the_npz(repo, mnist, tmp_path, capsys):
    npz = tmp_path / "in.npz"
    np.savez(npz, x=mnist["test"].x[:20].numpy(), y=mnist["test"].y[:20].numpy())  # float x
    code, out, err = _run(
        capsys,
        "--model",
        "mnist-small",
        "--repo",
        repo,
        "--attack",
        "universal",
        "--eps",
        0.3,
        "--npz",
        npz,
        "--n",
        20,
        "--out",
        tmp_path / "u.npz",
    )
    assert code == 0, err
    assert "fooling rate" in out
    data = np.load(tmp_path / "u.npz")
    delta = data["x_adv"] - data["x"]
    assert np.abs(delta).max() <= 0.3 + 1e-6


def test_early_stop_keeps_inputs_near_the_boundary(repo, mnist, tmp_path, capsys):
    npz = tmp_path / "in.npz"
    np.savez(npz, x=mnist["test"].x[:20].numpy(), y=mnist["test"].y[:20].numpy())
    common = ["--model", "mnist-small", "--repo", repo, "--attack", "pgd", "--eps", 0.3]
    common += ["--steps", 20, "--step-size", 0.02, "--n", 20, "--npz", npz]
    stopped = tmp_path / "stopped.npz"
    code, _out, err = _run(capsys, *common, "--early-stop", "--out", stopped)
    assert code == 0, err
    full = tmp_path / "full.npz"
    code, _out, err = _run(capsys, *common, "--out", full)
    assert code == 0, err
    a, b = np.load(stopped), np.load(full)
    both = a["success"] & b["success"]
    assert both.sum() >= 10
    # l_2, not l_inf: the random start alone already reaches the l_inf budget on some pixel.
    dist_stopped = np.linalg.norm((a["x_adv"] - a["x"]).reshape(20, -1), axis=1)[both]
    dist_full = np.linalg.norm((b["x_adv"] - b["x"]).reshape(20, -1), axis=1)[both]
    assert dist_stopped.mean() < dist_full.mean()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--attack", "nope"], "unknown attack 'nope'"),
        (["--attack", "pgd", "--eps", "1.5"], "above 1"),
        (["--attack", "pgd", "--eps", "-0.1"], "positive"),
        (["--attack", "pgd", "--norm", "l1"], "unknown norm"),
        (["--attack", "fgsm", "--steps", "5"], "does not take steps"),
        (["--attack", "fgsm", "--early-stop"], "does not take early_stop"),
        (["--attack", "universal", "--targeted", "random"], "untargeted only"),
        (["--attack", "pgd", "--targeted", "sideways"], "--targeted 'sideways'"),
        (["--attack", "pgd", "--targeted", "given"], "needs --target"),
        (["--attack", "pgd", "--target", "12"], "not a class"),
        (["--attack", "pgd", "--loss", "hinge"], "unknown loss"),
        (["--attack", "pgd", "--n", "0"], "--n must be positive"),
        (["--attack", "pgd", "--top-n", "4"], "does not take top_n"),
        (["--attack", "csa", "--top-n", "0"], "top_n must be a positive integer"),
    ],
)
def test_user_errors_exit_2_with_one_line(repo, tmp_path, capsys, argv, message):
    code, _out, err = _run(
        capsys,
        "--model",
        "mnist-small",
        "--repo",
        repo,
        *argv,
        "--out",
        tmp_path / "o.npz",
        "--npz",
        tmp_path / "missing-is-fine-if-we-fail-first.npz",
    )
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o.npz").exists()


def test_unknown_model_exits_2(repo, tmp_path, capsys):
    code, _, err = _run(
        capsys, "--model", "nope", "--repo", repo, "--attack", "pgd", "--out", tmp_path / "o.npz"
    )
    assert code == 2 and err.count("\n") == 1 and "no model 'nope'" in err and "mnist-small" in err


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((2, 28, 28), np.uint8), "y": np.zeros(2, np.int64)}, "no array x"),
        ({"x": np.zeros((2, 3, 32, 32), np.uint8), "y": np.zeros(2, np.int64)}, "model expects"),
        ({"x": np.full((2, 28, 28), 2.0, np.float32), "y": np.zeros(2, np.int64)}, "[0, 1]"),
    ],
)
def test_bad_npz_exits_2(repo, tmp_path, capsys, arrays, message):
    npz = tmp_path / "bad.npz"
    np.savez(npz, **arrays)
    code, _, err = _run(
        capsys,
        "--model",
        "mnist-small",
        "--repo",
        repo,
        "--attack",
        "fgsm",
        "--npz",
        npz,
        "--out",
        tmp_path / "o.npz",
    )
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_npz_that_is_not_an_npz_exits_2(repo, tmp_path, capsys):
    npz = tmp_path / "bad.npz"
    npz.write_text("not a zip")
    code, _, err = _run(
        capsys,
        "--model",
        "mnist-small",
        "--repo",
        repo,
        "--attack",
        "fgsm",
        "--npz",
        npz,
        "--out",
        tmp_path / "o.npz",
    )
    assert code == 2 and err.count("\n") == 1 and "bad.npz" in err, err
