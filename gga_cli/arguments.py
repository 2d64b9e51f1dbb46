"""Argument values the commands share the parsing of."""

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
