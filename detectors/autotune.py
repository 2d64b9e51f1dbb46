"""Pick the fastest gradient strategy by measuring, once per batch-size bucket, and remember it.

The winner depends on the model, the device and the batch size (replication wins at batch 1 on a
small CPU model, the vmapped backward at larger batches), so it is measured rather than guessed.
A candidate that fails on the model (``vmap`` over an operator it has no batching rule for, in a
graph converted from ONNX, say) is left out with a log line: requests never meet its failure.
One ``AutoTuner`` serves one engine (one model on one device); batch sizes are grouped in
power-of-two buckets. The cache is the only shared mutable state of an engine, behind a lock;
measurements are serialised by another, so reading a choice never waits for one.
"""

import logging
import statistics
import threading
import time
from collections.abc import Callable, Sequence

import torch

logger = logging.getLogger(__name__)

# A strategy whose untimed first run takes longer than this is timed once, not ``repeats`` times.
SLOW_RUN_S = 1.0


class TuningCancelled(Exception):
    """A measurement was stopped between two runs (a server shutting down): nothing chosen."""


def bucket_of(batch_size: int) -> int:
    """The power-of-two bucket of a batch size: the smallest power of two >= it.

    Raises:
        ValueError: ``batch_size`` is not positive.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    return 1 << (batch_size - 1).bit_length()


def time_call(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs, after one untimed run."""
    return time_round_robin({"fn": fn}, device, repeats)["fn"]


def time_round_robin(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warm: bool = True
) -> dict[str, float]:
    """Median wall time in seconds of each function, timed in interleaved rounds.

    Each function runs once untimed (unless ``warm`` is False: the caller just ran each), then
    ``repeats`` rounds time every function once in turn, so a burst of load from other processes
    hits all of them alike and their ratios hold up better than with back-to-back blocks.
    """
    if warm:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


class AutoTuner:
    """Measures candidate strategies per bucket and remembers the fastest.

    Args:
        device: where the measured work runs (for synchronisation on CUDA).
        repeats: timed runs per candidate; the median counts.
        label: a name for log lines (the model's).
    """

    def __init__(self, device: torch.device, repeats: int = 3, label: str = "model") -> None:
        self.device = device
        self.repeats = repeats
        self.label = label
        self._lock = threading.Lock()  # the two dicts below
        self._measuring = threading.Lock()  # one measurement at a time
        self._choices: dict[int, str] = {}
        self._timings: dict[int, dict[str, float]] = {}

    def choice(self, bucket: int) -> str | None:
        """The remembered winner of ``bucket``, or ``None`` if it was never tuned."""
        with self._lock:
            return self._choices.get(bucket)

    def timings(self, bucket: int) -> dict[str, float]:
        """Median seconds per candidate measured for ``bucket`` (empty if never tuned)."""
        with self._lock:
            return dict(self._timings.get(bucket, {}))

    def known(self) -> dict[int, dict[str, object]]:
        """Every tuned bucket: ``{bucket: {"choice": name, "timings": {name: seconds}}}``."""
        with self._lock:
            return {
                b: {"choice": c, "timings": dict(self._timings.get(b, {}))}
                for b, c in self._choices.items()
            }

    def remember(self, bucket: int, choice: str, timings: dict[str, float]) -> None:
        """Adopt a winner measured earlier (a tuning cache), unless this bucket has one."""
        with self._lock:
            self._choices.setdefault(bucket, choice)
            self._timings.setdefault(bucket, dict(timings))

    def tune(self, bucket: int, candidates: Sequence[str], run: Callable[[str], object]) -> str:
        """Measure ``run(name)`` for every candidate and remember the fastest for ``bucket``.

        Measurements are serialised by their own lock: concurrent first calls wait for one
        measurement instead of running several that would disturb each other's timings. The
        choices are behind another, so a call at a tuned bucket never waits for a measurement
        running in the background.

        Args:
            bucket: the batch-size bucket (the input ``run`` uses should have this size).
            candidates: strategy names to measure.
            run: runs one strategy once on a representative input.

        Returns:
            The winning name (the earlier candidate on a tie).

        Raises:
            ValueError: no candidates.
            RuntimeError: every candidate failed on this model (the errors are in the message).
        """
        if not candidates:
            raise ValueError("no strategy to tune: give at least one candidate")
        with self._measuring:
            if (known := self.choice(bucket)) is not None:
                return known
            start = time.perf_counter()
            fns = self._working({name: (lambda name=name: run(name)) for name in candidates})
            first_runs_s = time.perf_counter() - start
            # A large model's pass takes seconds: one timed round already separates strategies
            # that differ by more than the noise, and three would cost minutes per bucket.
            slow = first_runs_s / max(len(candidates), 1) > SLOW_RUN_S
            repeats = 1 if slow else self.repeats
            timings = time_round_robin(fns, self.device, repeats, warm=False)
            best = min(fns, key=lambda name: timings[name])
            with self._lock:
                self._choices[bucket] = best
                self._timings[bucket] = timings
        logger.info(
            "gradient strategy for %s on %s, batch bucket %d: %s (%s)",
            self.label,
            self.device,
            bucket,
            best,
            ", ".join(f"{n} {t * 1e3:.2f} ms" for n, t in timings.items()),
        )
        return best

    def _working(self, fns: dict[str, Callable[[], object]]) -> dict[str, Callable[[], object]]:
        """The candidates that run on this model (each run once: the untimed first run)."""
        working, errors = {}, {}
        for name, fn in fns.items():
            try:
                fn()
            except TuningCancelled:
                raise
            except Exception as err:  # any failure rules the strategy out
                errors[name] = f"{type(err).__name__}: {str(err)[:200]}"
                logger.warning(
                    "gradient strategy %s fails on %s and is skipped: %s",
                    name,
                    self.label,
                    errors[name],
                )
            else:
                working[name] = fn
        if not working:
            raise RuntimeError(f"every gradient strategy fails on {self.label}: {errors}")
        return working
