"""Per-model inference statistics in the shape of Triton's statistics extension.

``tritonclient``'s ``get_inference_statistics`` reads cumulative counts and nanoseconds: requests
that succeeded or failed, time queued, time computing, and the same per batch size. The served
model records into one :class:`InferenceStats` (thread-safe: the batcher's threads and the
event loop both record).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _BatchStats:
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)


class InferenceStats:
    """Cumulative statistics of one served model since it was loaded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_inference_ms = 0
        self.inference_count = 0  # images
        self.execution_count = 0  # micro-batches
        self.success = _Duration()
        self.fail = _Duration()
        self.queue = _Duration()
        self.compute_infer = _Duration()
        self.compute_output = _Duration()
        self.batches: dict[int, _BatchStats] = {}

    def record_request(self, ok: bool, seconds: float) -> None:
        """A request answered (``ok``) or failed after ``seconds`` in the model."""
        with self._lock:
            (self.success if ok else self.fail).add(seconds)

    def record_batch(
        self, size: int, queue_waits: list[float], infer_s: float, output_s: float
    ) -> None:
        """A computed and stored micro-batch of ``size`` images."""
        with self._lock:
            self.last_inference_ms = int(time.time() * 1000)
            self.inference_count += size
            self.execution_count += 1
            for wait in queue_waits:
                self.queue.add(wait)
            self.compute_infer.add(infer_s)
            self.compute_output.add(output_s)
            batch = self.batches.setdefault(size, _BatchStats())
            batch.compute_input.add(0.0)
            batch.compute_infer.add(infer_s)
            batch.compute_output.add(output_s)

    def to_triton(self, name: str, version: str) -> dict[str, Any]:
        """The ``model_stats`` entry of Triton's statistics response."""
        with self._lock:
            zero = _Duration(count=self.execution_count).to_dict()
            return {
                "name": name,
                "version": version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.to_dict(),
                    "fail": self.fail.to_dict(),
                    "queue": self.queue.to_dict(),
                    "compute_input": zero,  # decoding happens before the queue, per request
                    "compute_infer": self.compute_infer.to_dict(),
                    "compute_output": self.compute_output.to_dict(),
                    "cache_hit": {"count": 0, "ns": 0},
                    "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": b.compute_input.to_dict(),
                        "compute_infer": b.compute_infer.to_dict(),
                        "compute_output": b.compute_output.to_dict(),
                    }
                    for size, b in sorted(self.batches.items())
                ],
            }
