"""The dynamic batcher: one bounded queue and one worker thread per model.

MLServer's ``AdaptiveBatcher`` is the pattern: every request gets a future; a worker gathers
queued requests into a micro-batch until it holds ``max_batch_size`` images or ``max_latency``
has passed since the first one was taken; the batch is computed by one call and each request's
slice is handed back through its future, errors to every waiter of the batch.

Unlike MLServer the workers are plain threads, not coroutines: the gradient engine holds the CPU
for tens of milliseconds per batch, and the event loop must keep accepting and refusing requests
meanwhile. Futures belong to the loop and are resolved with ``call_soon_threadsafe``.

Two stages, two threads: the *compute* thread runs the engine on one micro-batch while the
*persist* thread stores the previous one (a database round trip must not idle the engine), and
only the persist stage resolves the futures, so no response leaves before its rows are
committed. The persist stage may answer some requests of a batch with an error and the others
with their results: one request's failure never sinks its companions.

Deadlines: a request is answered ``DeadlineExceeded`` (503), and nothing of it is stored, when its
deadline passes while it is queued, while its micro-batch waits to fill, or before the persist
stage takes the computed batch (the engine is not interrupted: the request's rows are dropped
from the batch before the store transaction and the waiter answered then). Once its rows
are handed to the store it is answered with them, however late, because a prediction that was
stored must never be reported lost. The queue is bounded (``QueueFull``); load beyond what the
server answers in time is shed before decoding, by the admission control of the protocol layer.

A request is the unit of batching: its images are never split across micro-batches, so a batch's
store transaction holds all of a request's rows or none of them.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from service.errors import DeadlineExceeded, QueueFull, ShuttingDown

logger = logging.getLogger(__name__)


class ItemState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    EXPIRED = "expired"


@dataclass(eq=False)
class WorkItem:
    """One request waiting in, or taken from, the queue.

    Attributes:
        inputs: The request's images, (n, C, H, W) floats in [0, 1].
        context: Whatever the batch function needs per request (key id, flags); opaque here.
        enqueued_at: ``time.monotonic()`` at submission.
        deadline: ``time.monotonic()`` after which the request is refused rather than stored.
        started_at: When the worker took it into a batch.
    """

    inputs: Tensor
    context: Any
    enqueued_at: float
    deadline: float
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    state: ItemState = ItemState.QUEUED
    started_at: float = 0.0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = int(self.inputs.shape[0])


# Runs on the compute thread. Without a persist function it returns one result per item, in
# order, delivered as they are (so deadlines are last checked before it runs); with one, it
# returns whatever the persist function needs.
BatchFunction = Callable[[Sequence[WorkItem]], Any]
# Runs on the persist thread with the batch's requests still within their deadline (in order, a
# subset of those computed) and the compute function's output; it stores theirs only and returns
# one result per request given, where an exception instance answers that request alone.
PersistFunction = Callable[[Sequence[WorkItem], Any], Sequence[Any]]

_STOP = object()  # tells the persist thread that the compute thread has finished


class BatchTimes:
    """Seconds the compute stage takes per micro-batch, by power-of-two batch-size bucket.

    Each bucket keeps an exponentially weighted moving average, so the estimate follows a host
    that slows down or speeds up. The wait behind ``n`` queued images is then the time of the
    full micro-batches they make plus the last partial one, the same cut the batcher makes.

    Args:
        max_batch_size: The batcher's largest micro-batch.
        weight: Weight of the newest batch in each average.
    """

    def __init__(self, max_batch_size: int, weight: float = 0.2) -> None:
        self.max_batch_size = max_batch_size
        self.weight = weight
        self._seconds: dict[int, float] = {}

    @staticmethod
    def _bucket(images: int) -> int:
        return 1 << (max(1, images) - 1).bit_length()

    def observe(self, images: int, seconds: float) -> None:
        if seconds <= 0 or images < 1:
            return
        bucket = self._bucket(min(images, self.max_batch_size))
        old = self._seconds.get(bucket)
        self._seconds[bucket] = seconds if old is None else old + self.weight * (seconds - old)

    def batch_seconds(self, images: int) -> float | None:
        """Expected seconds of one micro-batch of ``images``; None before any measurement.

        An unmeasured bucket is scaled linearly from the nearest measured smaller one (an
        overestimate: batching is sublinear), or taken from the nearest larger one.
        """
        if not self._seconds:
            return None
        bucket = self._bucket(images)
        if bucket in self._seconds:
            return self._seconds[bucket]
        smaller = [b for b in self._seconds if b < bucket]
        if smaller:
            b = max(smaller)
            return self._seconds[b] * bucket / b
        return self._seconds[min(self._seconds)]

    def seconds_for(self, images: int) -> float | None:
        """Expected seconds to compute ``images`` queued images; None before any measurement."""
        if images <= 0:
            return 0.0 if self._seconds else None
        full, rest = divmod(images, self.max_batch_size)
        per_full = self.batch_seconds(self.max_batch_size)
        if per_full is None:
            return None
        last = self.batch_seconds(rest) if rest else 0.0
        return full * per_full + (last or 0.0)


class Batcher:
    """Micro-batches one model's requests on a dedicated worker thread.

    Args:
        name: Model name (for errors and logs).
        batch_fn: Computes a micro-batch; see :data:`BatchFunction`.
        persist_fn: Stores a computed micro-batch on a second thread and returns the results;
            see :data:`PersistFunction`. None: ``batch_fn`` does everything.
        max_batch_size: Most images in one micro-batch (a single larger request runs alone).
        max_latency_s: Longest a batch waits for more requests after its first one.
        queue_size: Most images queued; beyond it :meth:`submit` raises ``QueueFull`` at once.
        on_depth: Called with the queued image count whenever it changes (a metrics gauge).
        on_reject: Called with ``"queue_full"`` or ``"deadline"`` for each refused request.
        on_failure: Called with ``"compute"`` or ``"persist"`` when a whole stage fails.
    """

    def __init__(
        self,
        name: str,
        batch_fn: BatchFunction,
        *,
        persist_fn: PersistFunction | None = None,
        max_batch_size: int = 32,
        max_latency_s: float = 0.005,
        queue_size: int = 256,
        on_depth: Callable[[int], None] | None = None,
        on_reject: Callable[[str], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or max_latency_s < 0:
            raise ValueError(
                "max_batch_size and queue_size must be >= 1 and max_latency_s >= 0, got "
                f"{max_batch_size}, {queue_size}, {max_latency_s}"
            )
        self.name = name
        self.batch_fn = batch_fn
        self.persist_fn = persist_fn
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.queue_size = queue_size
        self.batch_times = BatchTimes(max_batch_size)
        self._on_depth = on_depth or (lambda _depth: None)
        self._on_reject = on_reject or (lambda _reason: None)
        self._on_failure = on_failure or (lambda _stage: None)
        self._queue: collections.deque[WorkItem] = collections.deque()
        self._queued_images = 0
        self._cond = threading.Condition()
        self._accepting = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._persist_thread: threading.Thread | None = None
        # One computed batch may wait while the previous one is stored; a slower store then
        # holds the compute thread back instead of piling up results in memory.
        self._handoff: queue.Queue[Any] = queue.Queue(maxsize=1)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread and accept requests."""
        with self._cond:
            if self._thread is not None:
                return
            self._accepting = True
            self._stopping = False
            if self.persist_fn is not None:
                self._persist_thread = threading.Thread(
                    target=self._persist_loop, name=f"store-{self.name}", daemon=True
                )
                self._persist_thread.start()
            self._thread = threading.Thread(
                target=self._run, name=f"batcher-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, finish every queued one, then stop the workers.

        Requests still queued when ``timeout_s`` runs out are refused with ``ShuttingDown``
        (never computed, never stored) rather than left waiting for a process about to exit.

        Args:
            timeout_s: Longest to wait for the queue to drain (None: as long as it takes).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
        for attr in ("_thread", "_persist_thread"):
            thread = getattr(self, attr)
            if thread is None:
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
            if thread.is_alive():
                logger.warning("batcher %s did not drain within %s s", self.name, timeout_s)
                self._refuse_queued()
            setattr(self, attr, None)

    def _refuse_queued(self) -> None:
        with self._cond:
            items = list(self._queue)
            self._queue.clear()
            self._queued_images = 0
            for item in items:
                item.state = ItemState.EXPIRED
        for item in items:
            self._resolve(item, error=ShuttingDown())

    @property
    def depth(self) -> int:
        """Images waiting in the queue."""
        return self._queued_images

    # -- event-loop side ---------------------------------------------------------------------

    async def submit(self, inputs: Tensor, context: Any, timeout_s: float) -> Any:
        """Queue one request and wait for its result.

        Args:
            inputs: (n, C, H, W) images.
            context: Passed through to the batch function.
            timeout_s: The request's deadline from now.

        Returns:
            The batch function's result for this request.

        Raises:
            QueueFull: The queue cannot take ``n`` more images (raised at once).
            DeadlineExceeded: The deadline passed before the request's results were handed to
                the persist stage (nothing of it is stored; see the module's docstring).
            ShuttingDown: The batcher no longer accepts requests.
        """
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        item = WorkItem(
            inputs=inputs,
            context=context,
            enqueued_at=now,
            deadline=now + timeout_s,
            future=loop.create_future(),
            loop=loop,
        )
        with self._cond:
            if not self._accepting:
                raise ShuttingDown()
            # An empty queue always takes a request, so one request larger than the queue is
            # served alone instead of being refused forever.
            if self._queue and self._queued_images + item.size > self.queue_size:
                self._on_reject("queue_full")
                raise QueueFull(self.name, self.queue_size, self._retry_after())
            self._queue.append(item)
            self._queued_images += item.size
            depth = self._queued_images
            self._cond.notify()
        self._on_depth(depth)
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), timeout_s)
        except TimeoutError:
            with self._cond:
                if item.state is ItemState.QUEUED:
                    item.state = ItemState.EXPIRED
                    self._remove(item)
                    expired = True
                else:
                    expired = False
            if expired:
                self._on_reject("deadline")
                raise DeadlineExceeded(self.name, timeout_s) from None
            # Taken into a micro-batch: the workers answer it, with DeadlineExceeded if it is
            # dropped before the store, or with its stored results; either way no stored
            # prediction is reported lost.
            return await item.future

    def _retry_after(self) -> int:
        """Whole seconds until the images queued now are computed (at least 1)."""
        wait = self.batch_times.seconds_for(self._queued_images)
        return 1 if wait is None else max(1, math.ceil(wait))

    def _remove(self, item: WorkItem) -> None:
        try:
            self._queue.remove(item)
        except ValueError:
            return
        self._queued_images -= item.size
        self._on_depth(self._queued_images)

    # -- worker side -------------------------------------------------------------------------

    def _take_batch(self) -> list[WorkItem] | None:
        """Block until a micro-batch is ready; None when stopping with an empty queue."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            batch: list[WorkItem] = []
            images = 0
            close_at = time.monotonic() + self.max_latency_s
            while True:
                while self._queue and (
                    not batch or images + self._queue[0].size <= self.max_batch_size
                ):
                    item = self._queue.popleft()
                    self._queued_images -= item.size
                    if time.monotonic() > item.deadline:
                        self._expire(item)  # before any work: never computed
                        continue
                    item.state = ItemState.RUNNING
                    batch.append(item)
                    images += item.size
                full = images >= self.max_batch_size or (
                    self._queue and images + self._queue[0].size > self.max_batch_size
                )
                remaining = close_at - time.monotonic()
                if full or remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            depth = self._queued_images
        self._on_depth(depth)
        return batch

    def _in_time(self, batch: Sequence[WorkItem]) -> list[WorkItem]:
        """The requests of ``batch`` still within their deadline; the others are refused."""
        now = time.monotonic()
        kept = []
        for item in batch:
            if now > item.deadline:
                self._expire(item)
            else:
                kept.append(item)
        return kept

    def _expire(self, item: WorkItem) -> None:
        """Answer ``item`` with ``DeadlineExceeded``: its deadline passed, nothing was stored."""
        item.state = ItemState.EXPIRED
        self._resolve(item, error=DeadlineExceeded(self.name, item.deadline - item.enqueued_at))
        self._on_reject("deadline")

    def _run(self) -> None:
        try:
            while True:
                batch = self._take_batch()
                if batch is None:
                    return
                batch = self._in_time(batch)  # waiting for the batch to fill may outlast some
                if not batch:
                    continue
                started = time.monotonic()
                for item in batch:
                    item.started_at = started
                try:
                    computed = self.batch_fn(batch)
                except BaseException as err:  # every waiter must hear of the failure
                    logger.exception("micro-batch of model %s failed", self.name)
                    self._on_failure("compute")
                    for item in batch:
                        self._resolve(item, error=err)
                    continue
                self.batch_times.observe(sum(i.size for i in batch), time.monotonic() - started)
                if self.persist_fn is None:
                    self._deliver(batch, computed)
                else:
                    self._handoff.put((batch, computed))
        finally:
            if self.persist_fn is not None:
                self._handoff.put(_STOP)

    def _persist_loop(self) -> None:
        assert self.persist_fn is not None
        while True:
            entry = self._handoff.get()
            if entry is _STOP:
                return
            batch, computed = entry
            # Computed but not stored yet: a request past its deadline is refused, not stored.
            batch = self._in_time(batch)
            if not batch:
                continue
            try:
                results = self.persist_fn(batch, computed)
            except BaseException as err:
                logger.exception("storing a micro-batch of model %s failed", self.name)
                self._on_failure("persist")
                for item in batch:
                    self._resolve(item, error=err)
                continue
            self._deliver(batch, results)

    def _deliver(self, batch: Sequence[WorkItem], results: Any) -> None:
        """Resolve each item with its result, or with the exception standing in its place."""
        if len(results) != len(batch):
            err = RuntimeError(
                f"batch function returned {len(results)} results for {len(batch)} requests"
            )
            logger.error("model %s: %s", self.name, err)
            self._on_failure("compute")
            for item in batch:
                self._resolve(item, error=err)
            return
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                self._resolve(item, error=result)
            else:
                self._resolve(item, result=result)

    @staticmethod
    def _resolve(item: WorkItem, result: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if item.future.done():
                return
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(result)

        try:
            item.loop.call_soon_threadsafe(settle)
        except RuntimeError:
            # The loop is closed (server gone); nobody is waiting any more.
            logger.debug("loop closed before a result of %s could be delivered", item.context)
