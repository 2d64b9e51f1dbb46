"""``gga lab saliency-layers``: detection against cost with GGA's saliency taken at each block."""

import json
from pathlib import Path

import numpy as np
import torch

from detectors.collect import view_inputs
from detectors.engine import EngineOptions, GradientEngine
from gga_lab.analysis.saliency_layers import Choice, choices, verdict, with_channel_max
from models.architectures import build_model
from tests.helpers.cli import gga


def test_the_channel_max_taken_afterwards_is_the_engines():
    torch.manual_seed(0)
    model = build_model("compact-cnn", {}).eval()
    x = torch.rand(3, 1, 28, 28)
    for layer, channels in ((None, 1), (0, 16)):
        plain = GradientEngine(
            model, EngineOptions(saliency_layer=layer, channel_max=False, strategy="batched")
        )
        out = plain(x)
        derived = with_channel_max(view_inputs(out), out, channels)
        engine = GradientEngine(model, EngineOptions(saliency_layer=layer, strategy="batched"))
        expected = view_inputs(engine(x))
        np.testing.assert_array_equal(derived.csm, expected.csm)
        np.testing.assert_array_equal(derived.gga, expected.gga)
    assert [c.name for c in choices(model, (1, 28, 28))] == [
        "input",
        *(f"block {b} {form}" for b in range(3) for form in ("max", "all")),
    ]
    assert Choice(1, False).options().saliency_layer == 1


def test_worth_it_needs_both_views_within_two_points_and_a_real_saving():
    base = {"auroc": {"gga-paper": {"pooled": 0.90}, "gga-csm": {"pooled": 0.95}}}

    def row(paper: float | None, csm: float, ratios: tuple[float, float]) -> dict:
        return {
            "auroc": {"gga-paper": {"pooled": paper}, "gga-csm": {"pooled": csm}},
            "cost_ratio_b1": ratios[0],
            "cost_ratio_b32": ratios[1],
        }

    assert verdict(row(0.89, 0.94, (0.5, 0.6)), base)["worth_it"]
    assert not verdict(row(0.87, 0.96, (0.5, 0.6)), base)["worth_it"]  # gga-paper lost 3
    assert not verdict(row(0.90, 0.95, (0.5, 0.85)), base)["worth_it"]  # no saving at b32
    assert not verdict(row(None, 0.95, (0.5, 0.6)), base)["keeps_detection"]  # unfittable


def test_the_command_writes_a_row_per_choice(tmp_path: Path, shared_data_dir: Path):
    out = tmp_path / "lenet.json"
    args = ["--n-fit", "60", "--n-test", "20", "--pgd-steps", "2", "--repeats", "1"]
    result = gga(
        "lab", "saliency-layers", "mnist-lenet-low", "--data-dir", str(shared_data_dir),
        *args, "--strategy", "batched", "--no-progress", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    names = [row["choice"] for row in report["choices"]]
    assert names == ["input", *(f"block {b} {f}" for b in range(4) for f in ("max", "all"))]
    assert set(report["untrusted"]) == {"fgsm", "pgd", "noise", "ood fashion-mnist", "ood uniform"}
    first, deepest = report["choices"][0], report["choices"][-1]
    assert first["cost_ratio_b32"] == 1.0 and "verdict" not in first
    assert deepest["activation"] == [50, 4, 4] and deepest["map_length"] == 800
    assert set(deepest["auroc"]) == {"gga-paper", "gga-csm"}
    assert "pooled" in deepest["auroc"]["gga-csm"] and "worth_it" in deepest["verdict"]
    assert "| block 3 all | 50x4x4 | 800 |" in result.stdout


def test_bad_options_are_one_line():
    result = gga("lab", "saliency-layers", "mnist-lenet-low", "--strategy", "fastest")
    assert result.returncode == 2
    assert "unknown gradient strategy" in result.stderr and "Traceback" not in result.stderr
