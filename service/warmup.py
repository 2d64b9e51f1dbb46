"""Warm-up in seconds: serve at once with cached or default strategies, tune the rest behind.

Measuring every gradient strategy at every batch bucket takes minutes on a large model (a
224x224 ResNet-18 took 735 s before it answered). So a model is ready as soon as it has run
one input: buckets measured on an earlier start are read from the tuning cache
(``detectors.tuning_cache``), the others use the engine's default strategy, and a background
thread measures them, smallest first, writing the cache after each one. A request never waits
for a measurement (the engine's ``tune_on_first_call`` is off); ``/v2/health/ready`` lists the
buckets still being tuned.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from detectors.autotune import TuningCancelled
from detectors.pipeline import GGAPipeline
from detectors.tuning_cache import TuningCache

logger = logging.getLogger(__name__)


class EngineTuning:
    """The warm-up of one served model's engine.

    Args:
        name: the model's name (for logs).
        pipeline: its pipeline (the engine is ``pipeline.engine``).
        weights_sha256: the served weights' hash (part of the cache key).
        input_shape: (C, H, W).
        batch_sizes: batch sizes the batcher can form (their buckets are tuned).
        cache_dir: the tuning cache's folder; None: no cache.
        background: tune in a background thread after ready (else before, as a test wants).
    """

    def __init__(
        self,
        name: str,
        pipeline: GGAPipeline,
        weights_sha256: str,
        input_shape: tuple[int, int, int],
        batch_sizes: Sequence[int],
        cache_dir: Path | None,
        background: bool = True,
    ) -> None:
        self.name = name
        self.engine = pipeline.engine
        self.pipeline = pipeline
        self.input_shape = input_shape
        self.batch_sizes = tuple(batch_sizes)
        self.background = background
        self.cache = TuningCache(cache_dir) if cache_dir is not None else None
        engine = self.engine
        self.cache_key = TuningCache.key(
            weights_sha256,
            input_shape,
            engine.options.to_dict(),
            engine.device,
            engine.memory_budget,
        )
        self._lock = threading.Lock()
        self._pending: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.from_cache: list[int] = []

    @property
    def pending(self) -> list[int]:
        """Buckets not measured yet (served with the default strategy meanwhile)."""
        with self._lock:
            return list(self._pending)

    def start(self) -> dict[int, str]:
        """Adopt cached choices, run one input, and tune the rest (now or in the background).

        Returns:
            bucket -> strategy in use when the model becomes ready.
        """
        engine = self.engine
        engine.tune_on_first_call = False  # a request never waits for a measurement
        buckets = engine.buckets(self.input_shape, self.batch_sizes)
        if self.cache is not None:
            cached = {b: e for b, e in self.cache.read(self.cache_key).items() if b in buckets}
            engine.adopt_tuning(cached)
            self.from_cache = sorted(cached)
        # First-call costs (kernel selection, allocator growth) are paid here, not by a client.
        self.pipeline(torch.rand(1, *self.input_shape))
        with self._lock:
            self._pending = [b for b in buckets if not engine.is_tuned(b)]
        if self._pending and self.background:
            self._thread = threading.Thread(
                target=self._tune_pending, name=f"tune-{self.name}", daemon=True
            )
            self._thread.start()
        elif self._pending:
            self._tune_pending()
        return {b: engine.strategy_for(b) for b in buckets}

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the background measurement before its next run of a strategy, and wait for it.

        A run in progress is not interrupted (torch cannot be): on a large model that is one
        pass of at most ``max_batch`` inputs.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the background tuning to finish; True if nothing is left to tune."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return not self.pending

    def _tune_pending(self) -> None:
        for bucket in self.pending:
            if self._stop.is_set():
                return
            try:
                chosen = self.engine.tune_bucket(self.input_shape, bucket, self._stop.is_set)
            except TuningCancelled:
                return  # shutting down: the bucket stays untuned, nothing is cached for it
            except Exception:  # a failed measurement leaves the default strategy in use
                logger.exception("model %s: tuning batch bucket %d failed", self.name, bucket)
                chosen = None
            with self._lock:
                self._pending.remove(bucket)
            if chosen is not None and self.cache is not None:
                self.cache.write(self.cache_key, self.engine.tuning_record())
            logger.info(
                "model %s: batch bucket %d tuned (%s); still to tune: %s",
                self.name,
                bucket,
                chosen,
                self.pending or "none",
            )
