"""Argument values the commands share the parsing of."""

import sys

from models.errors import GGAUserError


class BenchArgumentError(GGAUserError, ValueError):
    """A benchmark option has an unusable value."""


def positive_ints(text: str, option: str) -> list[int]:
    """``"1,8,32"`` as ``[1, 8, 32]``.

    Raises:
        BenchArgumentError: Empty, not integers, or one below 1; the message names ``option``.
    """
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise BenchArgumentError(
            f"{option} must be positive integers separated by commas, got {text!r}"
        )
    return values


def batch_size_for(given: int | None, model, input_shape: tuple[int, int, int]) -> int:
    """``--batch-size``, or the largest the engine's memory budget holds (printed).

    Raises:
        MemoryBudgetError: the budget cannot hold the pass of one input.
    """
    from detectors.memory import batch_within_budget

    if given is not None:
        return given
    size, capacity = batch_within_budget(model, input_shape)
    sys.stderr.write(f"batch size {size}: {capacity.describe()} (GGA_ENGINE_MEMORY_GB)\n")
    return size
