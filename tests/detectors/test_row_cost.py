"""The classes the engine reads: measured on this machine, given, or all."""

import itertools

import pytest
import torch
from torch import nn

from detectors.collect import view_inputs
from detectors.engine import EngineOptions, GradientEngine
from detectors.row_cost import (
    MIN_ROWS,
    EngineClock,
    RowChoiceError,
    budget_seconds,
    choose_row_ceiling,
    choose_rows,
    parse_saliency_layer,
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


class KnownClock(EngineClock):
    """Known seconds instead of wall time, so the rule is checked exactly on a busy machine.

    A forward costs ``forward_s`` (10 ms); the engine that plus ``per_row`` per class read at the
    input and ``per_row_at_block`` at any block.
    """

    def __init__(self, per_row: float, per_row_at_block: float, forward_s: float = 0.010) -> None:
        self.per_row, self.per_row_at_block = per_row, per_row_at_block
        self.forward_s = forward_s
        self.asked: list[tuple[int, int | None]] = []

    def forward(self, model: nn.Module, x: torch.Tensor) -> float:
        return self.forward_s

    def engine(self, model: nn.Module, x: torch.Tensor, rows: int, options: EngineOptions) -> float:
        self.asked.append((rows, options.saliency_layer))
        at_block = options.saliency_layer is not None
        assert options.channel_max is not at_block  # a block's maps keep every channel
        return self.forward_s + rows * (self.per_row_at_block if at_block else self.per_row)


class HeavyStemCNN(nn.Module):
    """Nearly all of its cost before the first pool, so gradients at block 0 skip most of it.

    Blocks (models/blocks.py): the stem's last output at 48 x 48 (block 0) and the tail's at
    12 x 12 (block 1, the deepest, which the choice never takes).
    """

    def __init__(self, num_classes: int = 40) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 48, 3, padding=1), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Conv2d(48, 48, 3, padding=1), nn.ReLU()]
        self.stem = nn.Sequential(*layers)
        self.tail = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(48, 8, 1), nn.ReLU())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(self.stem(x)).mean(dim=(2, 3)))


def test_a_model_of_ten_classes_reads_them_all_without_measuring() -> None:
    choice = choose_rows("auto", seeded(TinyCNN), (1, 28, 28), 10)
    assert choice.top_n is None and choice.ms_per_image == {} and choice.rows == 10


def test_many_classes_read_the_most_probable_that_fit_the_budget() -> None:
    lines: list[str] = []
    # 10 ms a forward and 10 ms + 4 ms per row: a budget of 8 forwards (80 ms) holds 17 rows.
    choice = choose_row_ceiling(
        seeded(WideCNN), (3, 32, 32), 100, floor_s=0.0, log=lines.append, clock=KnownClock(0.004, 1)
    )
    assert choice.top_n == 17 and choice.saliency_layer is None
    assert choice.budget_ms == pytest.approx(80.0)
    assert "forward at batch 1: 10.0 ms" in lines[0] and len(lines) >= 4
    saved = choice.to_dict()
    assert saved["top_n"] == 17 and saved["max_forwards"] == 8.0
    assert "the 17 most probable of 100 classes (7.8 forwards per image)" in saved["reason"]


def test_the_choice_is_measured_on_this_machine() -> None:
    # Wall time on a shared machine: what was measured and recorded, not how much it came to.
    lines: list[str] = []
    choice = choose_row_ceiling(seeded(WideCNN), (3, 32, 32), 100, floor_s=0.0, log=lines.append)
    assert choice.top_n is None or MIN_ROWS <= choice.top_n < 100
    assert {1, 8} <= set(choice.ms_per_image) and choice.forward_ms > 0
    assert choice.budget_ms == pytest.approx(8 * choice.forward_ms, rel=0.01)
    assert "forward at batch 1" in lines[0] and len(lines) >= 3
    assert choice.to_dict()["ms_per_image"] == {str(k): v for k, v in choice.ms_per_image.items()}


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
    # The features are float64 sums over a float32 CSM: equal to float32's precision, not more.
    torch.testing.assert_close(
        torch.from_numpy(cut.gga), torch.from_numpy(narrow.gga), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="cannot keep 17 of 16"):
        wide.leading_rows(17)


def test_where_ten_classes_at_the_input_cost_too_much_the_choice_moves_to_a_block() -> None:
    model = seeded(HeavyStemCNN).eval()
    lines: list[str] = []
    clock = KnownClock(per_row=0.020, per_row_at_block=0.002)
    # A budget of 4.1 forwards (41 ms): 10 rows at the input cost 210 ms, at block 0 30 ms.
    choice = choose_row_ceiling(
        model, (3, 48, 48), 40, max_forwards=4.1, floor_s=0.0, log=lines.append, clock=clock
    )
    assert choice.saliency_layer == 0 and choice.top_n == 15  # 10 + 15 x 2 ms = 40 ms
    assert (MIN_ROWS, 1) not in clock.asked  # block 1, the deepest, is never taken
    assert any("10 rows at block 0" in line for line in lines)
    assert "saliency at block 0" in choice.reason
    assert f"at the input {MIN_ROWS} classes cost 21.0 forwards" in choice.reason
    assert choice.to_dict()["saliency_layer"] == 0
    # What the choice names is what an engine with those options reads.
    options = EngineOptions(top_n=choice.top_n, saliency_layer=0, channel_max=False)
    out = GradientEngine(model, options)(torch.rand(2, 3, 48, 48))
    assert out.saliency.shape == (2, 15, 48 * 48 * 48)


def test_the_input_is_kept_where_no_block_affords_ten_classes_either() -> None:
    clock = KnownClock(per_row=0.020, per_row_at_block=0.010)  # block 0: 110 ms, over 40
    choice = choose_row_ceiling(
        seeded(HeavyStemCNN), (3, 48, 48), 40, max_forwards=4.0, floor_s=0.0, clock=clock
    )
    assert choice.saliency_layer is None and choice.top_n == MIN_ROWS
    no_blocks = nn.Sequential(nn.Flatten(), nn.Linear(3 * 48 * 48, 40))  # an MLP has no block
    choice = choose_row_ceiling(
        no_blocks, (3, 48, 48), 40, max_forwards=4.0, floor_s=0.0, clock=KnownClock(0.02, 0.002)
    )
    assert choice.saliency_layer is None and choice.top_n == MIN_ROWS


def test_the_input_or_a_given_block_is_kept_as_asked() -> None:
    model = seeded(HeavyStemCNN).eval()
    at_input = choose_rows("auto", model, (3, 48, 48), 40, saliency_layer=None)
    assert at_input.saliency_layer is None  # no fallback: the input was asked for
    given = choose_rows(12, model, (3, 48, 48), 40, saliency_layer=1)
    assert given.saliency_layer == 1 and given.top_n == 12 and given.ms_per_image == {}
    assert choose_rows("all", model, (3, 48, 48), 40, saliency_layer=0).saliency_layer == 0


def test_saliency_layer_values_are_parsed() -> None:
    assert parse_saliency_layer("auto") == "auto"
    assert parse_saliency_layer(" Input ") is None
    assert parse_saliency_layer("2") == 2
    for bad in ("-1", "deep", ""):
        with pytest.raises(RowChoiceError, match="auto, input or a block's index"):
            parse_saliency_layer(bad)


def test_the_seconds_allowance_fades_as_the_forward_grows() -> None:
    assert budget_seconds(0.0) == pytest.approx(0.25)
    assert budget_seconds(0.001) == pytest.approx(0.245)
    # From a 17 ms forward on, it never gives more than 10 forwards; from 19 ms, 8 forwards rule.
    forwards = [budget_seconds(f) / f for f in (0.017, 0.0225, 0.03, 0.05, 0.2)]
    assert all(b <= 10 for b in forwards) and forwards[1:] == pytest.approx([8.0] * 4)
    # No jump as it fades: a millisecond more of forward moves the budget by at most 8 ms.
    seconds = [budget_seconds(ms / 1000) for ms in range(1, 200)]
    assert all(abs(b - a) <= 0.008 + 1e-12 for a, b in itertools.pairwise(seconds))


def test_a_large_model_on_a_quick_cpu_is_held_to_forwards_not_to_the_seconds() -> None:
    # An ImageNet ResNet-18 on a quick CPU: a 22.5 ms forward, 20 ms a class at the input. A flat
    # 0.25 s would read 11 classes at the input for 11 forwards; faded, the budget is 8 forwards,
    # 10 classes at the input do not fit, and the saliency moves to a block where they do.
    clock = KnownClock(0.020, 0.005, forward_s=0.0225)
    choice = choose_row_ceiling(seeded(HeavyStemCNN), (3, 48, 48), 40, clock=clock)
    assert choice.budget_ms == pytest.approx(180.0)
    assert choice.saliency_layer == 0 and choice.rows >= MIN_ROWS
    assert choice.ms_per_image[choice.rows] <= 180.0
