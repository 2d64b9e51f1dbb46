"""The classes the engine reads: measured on this machine, given, or all."""

import pytest
import torch
from torch import nn

from detectors.collect import view_inputs
from detectors.engine import EngineOptions, GradientEngine
from detectors.row_cost import (
    MIN_ROWS,
    RowChoiceError,
    choose_row_ceiling,
    choose_rows,
    parse_top_n,
)
from tests.helpers.models import TinyCNN, seeded


class WideCNN(nn.Module):
    """Enough convolution at 32 x 32 that 100 backward rows cost far more than 8 forwards."""

    def __init__(self, num_classes: int = 100) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_a_model_of_ten_classes_reads_them_all_without_measuring() -> None:
    choice = choose_rows("auto", seeded(TinyCNN), (1, 28, 28), 10)
    assert choice.top_n is None and choice.ms_per_image == {} and choice.rows == 10


def test_many_classes_read_the_most_probable_that_fit_the_budget() -> None:
    model = seeded(WideCNN).eval()
    lines: list[str] = []
    # No floor in seconds: the budget is 8 forwards, which 100 rows exceed many times over.
    choice = choose_row_ceiling(model, (3, 32, 32), 100, floor_s=0.0, log=lines.append)
    assert choice.top_n is not None and MIN_ROWS <= choice.top_n < 100
    assert {1, 8} <= set(choice.ms_per_image) and choice.forward_ms > 0
    assert choice.budget_ms == pytest.approx(8 * choice.forward_ms, rel=0.01)
    assert "forward at batch 1" in lines[0] and len(lines) >= 3
    saved = choice.to_dict()
    assert saved["top_n"] == choice.top_n and saved["max_forwards"] == 8.0
    assert "most probable of 100 classes" in saved["reason"]


def test_classes_cheap_enough_are_all_read() -> None:
    # A floor of a minute per image: the 12 classes of a tiny model cost far less.
    choice = choose_row_ceiling(seeded(TinyCNN, num_classes=12), (1, 28, 28), 12, floor_s=60.0)
    assert choice.top_n is None and {1, 8} <= set(choice.ms_per_image)
    assert "all 12 classes fit the budget" in choice.reason


def test_given_numbers_are_checked_against_the_classes() -> None:
    model = seeded(TinyCNN, num_classes=30)
    assert choose_rows(12, model, (1, 28, 28), 30).top_n == 12
    assert choose_rows(30, model, (1, 28, 28), 30).top_n is None
    assert choose_rows("all", model, (1, 28, 28), 30).top_n is None
    with pytest.raises(RowChoiceError, match="only 30 classes"):
        choose_rows(31, model, (1, 28, 28), 30)
    assert parse_top_n(" Auto ") == "auto" and parse_top_n("7") == 7
    for bad in ("0", "-3", "many", ""):
        with pytest.raises(RowChoiceError, match="auto, all or a positive number"):
            parse_top_n(bad)


def test_the_leading_rows_of_a_wider_computation_are_the_narrower_one() -> None:
    model = seeded(TinyCNN, num_classes=30)
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    wide = view_inputs(GradientEngine(model, EngineOptions(top_n=16, strategy="batched"))(x))
    narrow = view_inputs(GradientEngine(model, EngineOptions(top_n=5, strategy="loop"))(x))
    cut = wide.leading_rows(5)
    assert (cut.classes == narrow.classes).all()
    torch.testing.assert_close(torch.from_numpy(cut.csm), torch.from_numpy(narrow.csm))
    torch.testing.assert_close(torch.from_numpy(cut.gga), torch.from_numpy(narrow.gga))
    with pytest.raises(ValueError, match="cannot keep 17 of 16"):
        wide.leading_rows(17)
