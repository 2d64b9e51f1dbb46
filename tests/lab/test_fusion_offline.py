"""gga_lab.analysis.fusion_offline: what the per-kind floor asks of the views, on synthetic
scores."""

import numpy as np
import pytest

from detectors.calibration import ConformalCalibrator
from gga_lab.analysis.fusion_offline import flag_threshold, floor_budget
from gga_lab.metrics import tnr_at_tpr


def test_flag_threshold_is_the_score_past_which_trust_falls_below_alpha() -> None:
    calibrator = ConformalCalibrator(np.arange(1.0, 100.0))  # 99 scores
    # trust(s) = (1 + #{scores >= s}) / 100: just past 96, three scores remain (trust 0.04).
    cut = flag_threshold(calibrator, 0.05)
    assert cut == 96.0
    assert calibrator.trust(np.array([cut + 0.5]))[0] < 0.05
    assert calibrator.trust(np.array([cut - 0.5]))[0] >= 0.05
    # 20 scores cannot give a trust below 1/21: nothing is flagged at alpha 1%.
    assert flag_threshold(ConformalCalibrator(np.arange(1.0, 21.0)), 0.01) is None


def test_floor_budget_measures_the_share_each_kind_needs_and_their_union() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    # Two views with independent clean scores; view "a" alone sees kind "far" (every input far
    # beyond every clean one), view "b" alone sees kind "near" (a shift of 2 sigma).
    views = {
        "a": {"clean": rng.standard_normal(n), "far": np.full(500, 50.0)},
        "b": {"clean": rng.standard_normal(n), "near": rng.standard_normal(5000) + 2.0},
    }
    views["a"]["near"] = rng.standard_normal(5000)
    views["b"]["far"] = rng.standard_normal(500)
    per_kind, need, union = floor_budget(views, ["far", "near"], alpha=0.05, gap=0.10)
    assert per_kind["far"][0] == "a" and per_kind["near"][0] == "b"
    # "far" stays at 100% at any false-alarm share: the smallest one tried is enough.
    assert per_kind["far"][1] == 1.0 and need["a"] == pytest.approx(0.05 / 100)
    # "near": TNR at share f is Phi(2 - z_{1-f}): 0.64 at 5%; keeping 0.54 = Phi(0.10) needs
    # z_{1-f} <= 1.90, so f = 1 - Phi(1.90) ~ 2.9%.
    assert per_kind["near"][1] == pytest.approx(0.64, abs=0.02)
    assert need["b"] == pytest.approx(0.029, abs=0.004)
    # Independent views: the union is about the sum of the shares.
    assert union == pytest.approx(need["a"] + need["b"], abs=0.003)
    assert (
        tnr_at_tpr(views["b"]["clean"], views["b"]["near"], 1 - need["b"])
        >= per_kind["near"][1] - 0.1
    )
