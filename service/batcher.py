"""The dynamic batcher: one bounded queue and one worker thread per model.

MLServer's ``AdaptiveBatcher`` is the pattern: every request gets a future; a worker gathers
queued requests into a micro-batch until it holds ``max_batch_size`` images or ``max_latency``
has passed since the first one was taken; the batch is computed by one call and each request's
slice is handed back through its future, errors to every waiter of the batch.

Unlike MLServer the worker is a plain thread, not a coroutine: the gradient engine holds the CPU
for tens of milliseconds per batch, and the event loop must keep accepting and refusing requests
meanwhile. Futures belong to the loop and are resolved with ``call_soon_threadsafe``.

A request is the unit of batching: its images are never split across micro-batches, so a batch's
single store transaction holds all of a request's rows or none of them.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
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
        deadline: ``time.monotonic()`` after which the request is refused rather than computed.
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


# Runs on the worker thread; returns one result per item, in order. It must persist the batch
# before returning: the futures are resolved (and the responses sent) only afterwards.
BatchFunction = Callable[[Sequence[WorkItem]], Sequence[Any]]


class Batcher:
    """Micro-batches one model's requests on a dedicated worker thread.

    Args:
        name: Model name (for errors and logs).
        batch_fn: Computes and stores a micro-batch; see :data:`BatchFunction`.
        max_batch_size: Most images in one micro-batch (a single larger request runs alone).
        max_latency_s: Longest a batch waits for more requests after its first one.
        queue_size: Most images queued; beyond it :meth:`submit` raises ``QueueFull`` at once.
        on_depth: Called with the queued image count whenever it changes (a metrics gauge).
        on_reject: Called with ``"queue_full"`` or ``"deadline"`` for each refused request.
    """

    def __init__(
        self,
        name: str,
        batch_fn: BatchFunction,
        *,
        max_batch_size: int = 32,
        max_latency_s: float = 0.005,
        queue_size: int = 256,
        on_depth: Callable[[int], None] | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or max_latency_s < 0:
            raise ValueError(
                "max_batch_size and queue_size must be >= 1 and max_latency_s >= 0, got "
                f"{max_batch_size}, {queue_size}, {max_latency_s}"
            )
        self.name = name
        self.batch_fn = batch_fn
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.queue_size = queue_size
        self._on_depth = on_depth or (lambda _depth: None)
        self._on_reject = on_reject or (lambda _reason: None)
        self._queue: collections.deque[WorkItem] = collections.deque()
        self._queued_images = 0
        self._cond = threading.Condition()
        self._accepting = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread and accept requests."""
        with self._cond:
            if self._thread is not None:
                return
            self._accepting = True
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name=f"batcher-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, finish every queued one, then stop the worker.

        Args:
            timeout_s: Longest to wait for the queue to drain (None: as long as it takes).
        """
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("batcher %s did not drain within %s s", self.name, timeout_s)
            self._thread = None

    @property
    def depth(self) -> int:
        """Images waiting in the queue."""
        return self._queued_images

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

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
            DeadlineExceeded: The request was still queued at its deadline (never computed).
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
                raise QueueFull(self.name, self.queue_size)
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
            # Already being computed: its rows will be stored, so wait and answer with them
            # rather than refuse a prediction that exists.
            return await item.future

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
                        # Its waiter is about to time out: refuse it here, before any work, so
                        # it is never computed or stored.
                        item.state = ItemState.EXPIRED
                        self._resolve(
                            item,
                            error=DeadlineExceeded(self.name, item.deadline - item.enqueued_at),
                        )
                        self._on_reject("deadline")
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

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            started = time.monotonic()
            for item in batch:
                item.started_at = started
            try:
                results = self.batch_fn(batch)
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(batch)} requests"
                    )
            except BaseException as err:  # every waiter must hear of the failure
                logger.exception("micro-batch of model %s failed", self.name)
                for item in batch:
                    self._resolve(item, error=err)
                continue
            for item, result in zip(batch, results, strict=True):
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
