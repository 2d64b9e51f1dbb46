"""The check that a refit loses no kind: planted regressions against a committed evaluation."""

import copy
import json
from pathlib import Path

import pytest

from gga_lab.regression import TRUST, compare, read_committed

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "results" / "fashion-mnist-cnn"


@pytest.fixture
def committed() -> dict:
    results = read_committed(COMMITTED)
    assert results is not None, f"no results.json in {COMMITTED}"
    return results


def test_an_identical_evaluation_has_no_regression(committed: dict) -> None:
    comparison = compare(committed, copy.deepcopy(committed), "committed")
    assert comparison.worse == [] and comparison.protocol_differences == []
    assert {c.kind for c in comparison.changes} == set(committed["tnr"][TRUST])
    assert "no kind worse by more than 5 points" in comparison.lines()[0]


def test_a_planted_drop_beyond_five_points_is_reported(committed: dict) -> None:
    after = copy.deepcopy(committed)
    before_lbfgs = committed["tnr"][TRUST]["lbfgs"]
    after["tnr"][TRUST]["lbfgs"] = before_lbfgs - 0.06  # planted: 6 points lost
    after["tnr"][TRUST]["pgd_linf"] -= 0.04  # within the tolerance
    after["tnr"][TRUST]["rotation"] += 0.10  # better is never a regression
    comparison = compare(committed, after, "committed")
    assert [c.kind for c in comparison.worse] == ["lbfgs"]
    assert comparison.worse[0].change == pytest.approx(-0.06)
    text = "\n".join(comparison.lines())
    assert "1 kind(s) worse" in text and "lbfgs" in text and "pgd_linf" not in text
    json.dumps(comparison.to_dict())  # comparison.json is plain JSON
    assert comparison.to_dict()["worse"] == ["lbfgs"]


def test_a_different_protocol_is_said(committed: dict) -> None:
    after = copy.deepcopy(committed)
    after["config"]["n"] = 200
    after["config"]["pgd_steps"] = 10
    comparison = compare(committed, after, "committed")
    assert comparison.protocol_differences == [
        f"n: {committed['config']['n']} -> 200",
        f"pgd_steps: {committed['config']['pgd_steps']} -> 10",
    ]
    assert "protocols differ" in comparison.lines()[-1]


def test_missing_results_and_rows(tmp_path: Path, committed: dict) -> None:
    assert read_committed(tmp_path) is None
    with pytest.raises(ValueError, match="trust score"):
        compare(committed, {"tnr": {}}, "committed")
