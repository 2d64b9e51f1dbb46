"""How many classes the engine can afford to read per input, measured on this machine.

GGA's cost grows with the K saliency rows: one backward pass (or one replicated copy) per class.
At 10 classes that is the method as published; at 1,000 classes and 224 x 224 it is over a
thousand forwards per image (docs/performance.md). ``choose_row_ceiling`` measures the engine at
batch 1 (the worst case per image: a serving batch only amortises) for a few row counts, fits
``seconds = fixed + per_row * K`` and gives the largest K whose cost stays within the budget:

    budget = max(max_forwards * forward, floor_s * (1 - forward / fade_s))

``max_forwards`` (default 8) keeps a slow model at a few forwards per image; ``floor_s`` (default
0.25 s) lets a fast one read every class whenever that is cheap anyway, whatever the ratio. That
allowance fades out as one forward nears ``fade_s`` (50 ms): a plain 0.25 s would give a model
with a 22 ms forward (an ImageNet ResNet-18 on a quick CPU) 11 forwards, and on a slower CPU 6,
so its choice would swing with the machine. Faded, it never gives more than 10 forwards once a
forward takes 17 ms or more, and from 19 ms on the 8 forwards are worth more than it. Below
``MIN_ROWS`` (10) rows the choice never goes: a CSM of fewer rows loses most of the pairs the
features read, and 10 is the paper's own setting. A model of at most 10 classes therefore always
reads all of them, and is never measured.

Where even 10 classes at the input exceed the budget (an ImageNet-size network on a CPU: about 11
forwards), the choice moves the saliency to a block instead of reading fewer classes: the
shallowest block, never the deepest, at which 10 classes fit (``EngineOptions.saliency_layer``,
every channel's sign kept). The backward pass then stops there, and on the zoo's models a middle
block keeps detection within about 2 pooled AUROC points at a third to two thirds of the cost
(docs/performance.md); the deepest block, after which a network only pools, loses it.

The measurement is what it is on the machine it ran on (a busy CPU measures more). It is recorded
with the choice (the model card at ``gga import``, ``detector.json`` at ``gga fit``), and
``--top-n`` overrides it.

Example:
    >>> choice = choose_row_ceiling(model, (3, 224, 224), num_classes=1000)
    >>> choice.top_n, choice.to_dict()["ms_per_image"]
    (12, {'1': 310.2, '8': 1350.8, '12': 1902.4})
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from detectors.base import DetectorFitError
from detectors.block_cut import BlockCut
from detectors.engine import EngineOptions, GradientEngine

MIN_ROWS = 10  # never fewer rows than the paper's 10 classes
MAX_FORWARDS = 8.0  # the budget per image, in forwards of the same model at batch 1
FLOOR_S = 0.25  # ...or this many seconds per image for a fast model, whichever is larger
FADE_S = 0.05  # the seconds allowance shrinks linearly to nothing as a forward nears this
PROBE_ROWS = 8  # the second row count measured (the first is 1)
_REPEATS = 3  # timed calls per measurement (one when a call takes over a second)
_REFINEMENTS = 3  # measurements after the first two, each on a better straight line


@dataclass(frozen=True)
class RowChoice:
    """The number of rows chosen and what was measured to choose it.

    Attributes:
        top_n: the most probable classes to read; ``None`` for all of them.
        reason: one sentence, for the card and the console.
        num_classes: the model's classes.
        forward_ms: one forward at batch 1, median (``None`` where nothing was measured).
        ms_per_image: rows -> engine milliseconds per image at batch 1, median.
        budget_ms: the per-image budget the choice kept to.
    """

    top_n: int | None
    reason: str
    num_classes: int
    forward_ms: float | None = None
    ms_per_image: dict[int, float] = field(default_factory=dict)
    budget_ms: float | None = None
    max_forwards: float = MAX_FORWARDS
    floor_s: float = FLOOR_S
    saliency_layer: int | None = None  # a block's index where the input cost too much

    @property
    def rows(self) -> int:
        """K, the rows read per input."""
        return self.num_classes if self.top_n is None else self.top_n

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, as stored in the card and in ``detector.json``'s provenance."""
        return {
            "top_n": self.top_n,
            "reason": self.reason,
            "num_classes": self.num_classes,
            "forward_ms": self.forward_ms,
            "ms_per_image": {str(k): v for k, v in self.ms_per_image.items()},
            "budget_ms": self.budget_ms,
            "max_forwards": self.max_forwards,
            "floor_s": self.floor_s,
            "fade_s": FADE_S,
            "saliency_layer": self.saliency_layer,
        }


def _fastest_seconds(call: Callable[[], object]) -> float:
    """The fastest wall time of ``call`` after one untimed run (which pays first-call costs).

    The fastest, not the median: other work on the machine only ever adds time, and the choice
    should follow what the model costs, not what a neighbour did during one run.
    """
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    repeats = 1 if first > 1.0 else _REPEATS
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


class EngineClock:
    """What the choice measures: a forward, and the engine reading some rows, at batch 1.

    The rule only ever sees these two numbers, so a clock that gives known seconds checks the
    rule exactly where wall time on a shared machine could not (tests/detectors/test_row_cost.py).
    """

    def forward(self, model: nn.Module, x: Tensor) -> float:
        """Seconds of one forward of ``x`` without a graph."""
        with torch.no_grad():
            return _fastest_seconds(lambda: model(x))

    def engine(self, model: nn.Module, x: Tensor, rows: int, options: EngineOptions) -> float:
        """Seconds of one engine call reading ``rows`` classes, its strategy tuned."""
        engine = GradientEngine(model, replace(options, top_n=rows), device=x.device)
        return _fastest_seconds(lambda: engine(x))


def choose_row_ceiling(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    device: torch.device | str | None = None,
    options: EngineOptions | None = None,
    max_forwards: float = MAX_FORWARDS,
    floor_s: float = FLOOR_S,
    block_fallback: bool = True,
    log: Callable[[str], None] | None = None,
    clock: EngineClock | None = None,
) -> RowChoice:
    """The most classes the engine reads within the budget (module docstring), measured.

    Args:
        model: the classifier, eval mode.
        input_shape: (C, H, W) of one input.
        num_classes: its number of classes.
        device: where the engine will run (default: the model's).
        options: the engine's other options (``saliency_layer`` changes the cost; the logit
            rescaling barely does); default ``EngineOptions()``.
        max_forwards: the budget in forwards per image.
        floor_s: the budget in seconds per image where that is larger, for a fast model (it
            fades with the forward: ``budget_seconds``).
        block_fallback: where 10 classes at the input exceed the budget, look for a block at
            which they fit (only when ``options`` names no ``saliency_layer`` of its own).
        log: called with one line per measurement (progress of a slow model).
        clock: what measures (default: wall time on this machine, ``EngineClock``).

    Returns:
        The ``RowChoice``: ``top_n=None`` where every class fits the budget, ``saliency_layer``
        set where the input could not afford 10 classes and a block could.
    """
    if num_classes <= MIN_ROWS:
        return RowChoice(None, f"{num_classes} classes: all are read", num_classes)
    say = log or (lambda _line: None)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
    base = options or EngineOptions()
    clock = clock or EngineClock()
    x = torch.rand(1, *input_shape, device=device)
    forward = clock.forward(model, x)
    say(f"forward at batch 1: {forward * 1e3:.1f} ms")
    budget = budget_seconds(forward, max_forwards, floor_s)

    def seconds(rows: int, options: EngineOptions) -> float:
        return clock.engine(model, x, rows, options)

    rows, measured = _affordable(seconds, num_classes, budget, base, say)
    figures = (forward, budget, max_forwards, floor_s)
    at_least = measured.get(MIN_ROWS, _line(measured)(MIN_ROWS))
    if block_fallback and base.saliency_layer is None and at_least > budget:
        moved = _at_a_block(model, x, seconds, num_classes, budget, base, say)
        if moved is not None:
            index, block_rows, block_measured = moved
            over = f"at the input {MIN_ROWS} classes cost {at_least / forward:.1f} forwards"
            return _row_choice(block_rows, block_measured, num_classes, *figures, index, over)
    return _row_choice(rows, measured, num_classes, *figures)


def budget_seconds(
    forward_s: float,
    max_forwards: float = MAX_FORWARDS,
    floor_s: float = FLOOR_S,
    fade_s: float = FADE_S,
) -> float:
    """The engine's budget per image for a model whose forward at batch 1 takes ``forward_s``.

    ``max_forwards`` forwards, or the seconds allowance where that is larger: ``floor_s`` for a
    fast model, shrinking linearly to nothing as the forward nears ``fade_s`` (module docstring).

    Example:
        >>> round(budget_seconds(0.0005), 4), round(budget_seconds(0.0225) / 0.0225, 1)
        (0.2475, 8.0)
    """
    return max(max_forwards * forward_s, floor_s * max(0.0, 1.0 - forward_s / fade_s))


def _affordable(
    seconds: Callable[[int, EngineOptions], float],
    num_classes: int,
    budget: float,
    options: EngineOptions,
    say: Callable[[str], None],
) -> tuple[int, dict[int, float]]:
    """The most rows within ``budget`` with these options, and the seconds measured per rows."""
    measured: dict[int, float] = {}
    for rows in (1, min(PROBE_ROWS, num_classes)):
        measured[rows] = seconds(rows, options)
        say(f"engine, {rows} rows at batch 1: {measured[rows] * 1e3:.1f} ms")
    refined = _refine(measured, num_classes, budget, lambda k: seconds(k, options), say)
    return refined, measured


def _at_a_block(
    model: nn.Module,
    x: Tensor,
    seconds: Callable[[int, EngineOptions], float],
    num_classes: int,
    budget: float,
    base: EngineOptions,
    say: Callable[[str], None],
) -> tuple[int, int, dict[int, float]] | None:
    """The shallowest block but the deepest where ``MIN_ROWS`` fit: (block, rows, measured).

    ``None`` for a model without blocks, or where no such block fits either.
    """
    try:
        count = BlockCut.find(model, x, 0).num_blocks
    except ValueError:  # no blocks (an MLP, a graph of bare functions): the input it is
        return None
    for index in range(count - 1):
        options = replace(base, saliency_layer=index, channel_max=False)
        cost = seconds(MIN_ROWS, options)
        say(f"engine, {MIN_ROWS} rows at block {index}, batch 1: {cost * 1e3:.1f} ms")
        if cost <= budget:
            rows, measured = _affordable(seconds, num_classes, budget, options, say)
            measured.setdefault(MIN_ROWS, cost)
            return index, max(rows, MIN_ROWS), measured
    return None


def _row_choice(
    rows: int,
    measured: dict[int, float],
    num_classes: int,
    forward: float,
    budget: float,
    max_forwards: float,
    floor_s: float,
    layer: int | None = None,
    why_layer: str = "",
) -> RowChoice:
    """The ``RowChoice`` of ``rows`` (all where ``rows >= num_classes``), its reason written."""
    ms = {k: round(v * 1e3, 2) for k, v in sorted(measured.items())}
    figures = (round(forward * 1e3, 3), ms, round(budget * 1e3, 2), max_forwards, floor_s, layer)
    where = "" if layer is None else f", saliency at block {layer}"
    if rows >= num_classes:
        reason = f"all {num_classes} classes{where} fit the budget of {budget:.2f} s per image"
        return RowChoice(
            None, reason + (f" ({why_layer})" if why_layer else ""), num_classes, *figures
        )
    cost = f" ({measured[rows] / forward:.1f} forwards per image)" if rows in measured else ""
    all_rows = _line(measured)(num_classes)
    reason = (
        f"the {rows} most probable of {num_classes} classes{where}{cost}: all of them would cost "
        f"about {all_rows / forward:.0f} forwards on this machine, the budget is "
        f"{budget / forward:.1f}" + (f"; {why_layer}, over it" if why_layer else "")
    )
    return RowChoice(rows, reason, num_classes, *figures)


def _line(measured: dict[int, float]) -> Callable[[int], float]:
    """Seconds against rows, the straight line through the fewest and the most rows measured."""
    low, high = min(measured), max(measured)
    per_row = (measured[high] - measured[low]) / max(high - low, 1)
    if per_row <= 0:  # noise on a busy machine: charge the largest run's cost to its rows
        return lambda rows: measured[high] * rows / high
    return lambda rows: measured[low] + per_row * (rows - low)


def _refine(
    measured: dict[int, float],
    num_classes: int,
    budget: float,
    seconds: Callable[[int], float],
    say: Callable[[str], None],
) -> int:
    """The most rows (up to all) whose measured cost fits ``budget``, measuring as it goes.

    Each step puts a straight line through the fewest and the most rows measured so far, takes
    the rows it allows, and measures them; a wider line predicts better, so a few steps settle.
    A measurement over budget scales its rows down by how much and ends the search.
    """
    rows = MIN_ROWS
    for _ in range(_REFINEMENTS):
        line = _line(measured)
        if line(num_classes) <= budget:
            rows = num_classes
        else:
            low = min(measured)
            per_row = max((line(low + 1) - line(low)), 1e-12)
            rows = int(min(max(low + (budget - line(low)) / per_row, MIN_ROWS), num_classes))
        if rows in measured:
            break
        measured[rows] = seconds(rows)
        say(f"engine, {rows} rows at batch 1: {measured[rows] * 1e3:.1f} ms")
        if measured[rows] > budget:
            return max(MIN_ROWS, math.floor(rows * budget / measured[rows]))
    fitting = [k for k, v in measured.items() if v <= budget and k >= MIN_ROWS]
    return max(fitting, default=rows)


class RowChoiceError(DetectorFitError):
    """A ``--top-n`` the model cannot serve."""


def parse_top_n(text: str) -> int | str:
    """``--top-n``'s value: ``"auto"``, ``"all"`` or a positive number of classes.

    Raises:
        RowChoiceError: anything else.
    """
    value = text.strip().lower()
    if value in ("auto", "all"):
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise RowChoiceError(f"--top-n must be auto, all or a positive number, got {text!r}")
    return number


def parse_saliency_layer(text: str) -> int | str | None:
    """``--saliency-layer``'s value: ``"auto"``, ``"input"`` (``None``) or a block's index.

    Raises:
        RowChoiceError: anything else.
    """
    value = text.strip().lower()
    if value == "auto":
        return "auto"
    if value == "input":
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise RowChoiceError(
            f"--saliency-layer must be auto, input or a block's index (0 = the shallowest), "
            f"got {text!r}"
        )
    return number


def choose_rows(
    requested: int | str,
    model: nn.Module,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    saliency_layer: int | str | None = "auto",
    log: Callable[[str], None] | None = None,
) -> RowChoice:
    """The rows a model reads: measured (``"auto"``), every class (``"all"``) or as given.

    Args:
        requested: ``"auto"``, ``"all"`` or a number of classes (``parse_top_n``).
        saliency_layer: ``"auto"`` (the input, or a block where the input cannot afford
            ``MIN_ROWS`` classes: only when ``requested`` is ``"auto"``), ``None`` (the input) or
            a block's index; the choice records it.

    Raises:
        RowChoiceError: a number larger than the model's classes.
    """
    layer = None if saliency_layer == "auto" else saliency_layer
    if requested == "auto":
        options = EngineOptions(saliency_layer=layer, channel_max=layer is None)
        choice = choose_row_ceiling(
            model,
            input_shape,
            num_classes,
            options=options,
            block_fallback=saliency_layer == "auto",
            log=log,
        )
        return choice if layer is None else replace(choice, saliency_layer=layer)
    if requested == "all":
        return RowChoice(
            None, f"all {num_classes} classes: --top-n all", num_classes, saliency_layer=layer
        )
    number = int(requested)
    if number > num_classes:
        raise RowChoiceError(
            f"--top-n {number}: the model has only {num_classes} classes; give at most "
            f"{num_classes}, or all"
        )
    top_n = None if number == num_classes else number
    reason = f"the {number} most probable classes: --top-n {number}"
    return RowChoice(top_n, reason, num_classes, saliency_layer=layer)
