"""The dynamic batcher with a plain batch function: batching, isolation, limits, draining."""

import asyncio
import threading
from collections.abc import Sequence

import pytest
import torch

from service.batcher import Batcher, WorkItem
from service.errors import DeadlineExceeded, QueueFull, ShuttingDown
from tests.helpers.models import TinyCNN, seeded


class Recorder:
    """Batch function running a real CNN, recording the batch sizes it saw."""

    def __init__(self) -> None:
        self.model = seeded(TinyCNN, side=8)
        self.sizes: list[int] = []
        self.contexts: list[object] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: Sequence[WorkItem]) -> list[torch.Tensor]:
        self.entered.set()
        self.gate.wait(10)
        x = torch.cat([i.inputs for i in items])
        self.sizes.append(len(x))
        self.contexts += [i.context for i in items]
        with torch.no_grad():
            out = self.model(x)
        return list(out.split([i.size for i in items]))


def _run(coro):
    return asyncio.run(coro)


def test_results_match_unbatched_and_batches_form() -> None:
    fn = Recorder()
    batcher = Batcher("tiny", fn, max_batch_size=16, max_latency_s=0.05, queue_size=64)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.rand(n, 1, 8, 8, generator=gen) for n in (1, 3, 2, 1, 4, 1, 2)]

    async def main() -> list[torch.Tensor]:
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(x, i, 5.0) for i, x in enumerate(inputs)))
        finally:
            batcher.stop()

    results = _run(main())
    assert max(fn.sizes) > 1, "no micro-batch held more than one request"
    assert sum(fn.sizes) == sum(len(x) for x in inputs)
    with torch.no_grad():
        for x, got in zip(inputs, results, strict=True):
            # Each request alone, batch of its own: its answer must not depend on companions.
            torch.testing.assert_close(got, fn.model(x), rtol=0, atol=1e-5)


def test_batch_never_exceeds_max_and_requests_stay_whole() -> None:
    fn = Recorder()
    batcher = Batcher("tiny", fn, max_batch_size=4, max_latency_s=0.02, queue_size=64)

    async def main() -> None:
        batcher.start()
        try:
            await asyncio.gather(
                *(batcher.submit(torch.rand(3, 1, 8, 8), i, 5.0) for i in range(6))
            )
            await batcher.submit(torch.rand(9, 1, 8, 8), "big", 5.0)  # larger than a batch: alone
        finally:
            batcher.stop()

    _run(main())
    assert fn.sizes[:-1] and all(s == 3 for s in fn.sizes[:-1]) and fn.sizes[-1] == 9


def test_full_queue_refuses_at_once_with_retry_after() -> None:
    fn = Recorder()
    fn.gate.clear()  # the worker blocks inside the first batch
    rejected: list[str] = []
    batcher = Batcher(
        "tiny", fn, max_batch_size=2, max_latency_s=0.0, queue_size=4, on_reject=rejected.append
    )

    async def main() -> None:
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(torch.rand(2, 1, 8, 8), "a", 5.0))
        await asyncio.to_thread(fn.entered.wait, 5)  # the worker holds it
        queued = [
            asyncio.ensure_future(batcher.submit(torch.rand(2, 1, 8, 8), n, 5.0)) for n in "bc"
        ]
        await asyncio.sleep(0.01)
        assert batcher.depth == 4
        with pytest.raises(QueueFull) as info:
            await batcher.submit(torch.rand(1, 1, 8, 8), "d", 5.0)
        assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"
        fn.gate.set()
        await asyncio.gather(first, *queued)
        batcher.stop()

    _run(main())
    assert rejected == ["queue_full"] and "d" not in fn.contexts


def test_deadline_refuses_without_computing() -> None:
    fn = Recorder()
    fn.gate.clear()
    batcher = Batcher("tiny", fn, max_batch_size=1, max_latency_s=0.0, queue_size=8)

    async def main() -> None:
        batcher.start()
        slow = asyncio.ensure_future(batcher.submit(torch.rand(1, 1, 8, 8), "slow", 5.0))
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(torch.rand(1, 1, 8, 8), "late", 0.05)
        fn.gate.set()
        await slow
        batcher.stop()

    _run(main())
    assert fn.contexts == ["slow"]


def test_a_deadline_passing_while_the_batch_fills_refuses_without_computing() -> None:
    fn = Recorder()
    rejected: list[str] = []
    # The worker takes "late" at once, then waits 0.5 s for companions: past its 0.1 s deadline.
    batcher = Batcher(
        "tiny", fn, max_batch_size=4, max_latency_s=0.5, queue_size=8, on_reject=rejected.append
    )

    async def main() -> None:
        batcher.start()
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(torch.rand(1, 1, 8, 8), "late", 0.1)
        batcher.stop()

    _run(main())
    assert fn.contexts == [] and rejected == ["deadline"]


class Stored:
    """A persist stage that records what it stored: the two-stage batcher of a served model."""

    def __init__(self) -> None:
        self.contexts: list[object] = []

    @staticmethod
    def compute(fn: Recorder):
        def batch_fn(items: Sequence[WorkItem]) -> dict[WorkItem, torch.Tensor]:
            return dict(zip(items, fn(items), strict=True))

        return batch_fn

    def __call__(self, items: Sequence[WorkItem], computed: dict) -> list[torch.Tensor]:
        self.contexts += [i.context for i in items]
        return [computed[i] for i in items]


def test_a_deadline_passing_during_compute_is_refused_and_never_stored() -> None:
    fn, stored = Recorder(), Stored()
    fn.gate.clear()  # the batch computes until the test lets it finish
    rejected: list[str] = []
    batcher = Batcher(
        "tiny",
        Stored.compute(fn),
        persist_fn=stored,
        max_batch_size=2,
        max_latency_s=5.0,  # the batch closes when full: both requests in it
        queue_size=8,
        on_reject=rejected.append,
    )

    async def main() -> None:
        batcher.start()
        late = asyncio.ensure_future(batcher.submit(torch.rand(1, 1, 8, 8), "late", 0.2))
        patient = asyncio.ensure_future(batcher.submit(torch.rand(1, 1, 8, 8), "patient", 30.0))
        await asyncio.to_thread(fn.entered.wait, 5)
        await asyncio.sleep(0.4)  # "late"'s deadline passes while its batch computes
        fn.gate.set()
        with pytest.raises(DeadlineExceeded):
            await late
        assert (await patient).shape == (1, 10)
        batcher.stop()

    _run(main())
    assert fn.contexts == ["late", "patient"], "both were computed, in one batch"
    assert stored.contexts == ["patient"] and rejected == ["deadline"]


def test_batch_error_reaches_every_waiter() -> None:
    def broken(items: Sequence[WorkItem]) -> list[object]:
        raise ValueError("engine exploded")

    batcher = Batcher("tiny", broken, max_batch_size=8, max_latency_s=0.02, queue_size=8)

    async def main() -> list[object]:
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(torch.rand(1, 1, 8, 8), i, 5.0) for i in range(3)),
                return_exceptions=True,
            )
        finally:
            batcher.stop()

    errors = _run(main())
    assert all(isinstance(e, ValueError) and "exploded" in str(e) for e in errors)


def test_stop_drains_queue_then_refuses() -> None:
    fn = Recorder()
    fn.gate.clear()
    batcher = Batcher("tiny", fn, max_batch_size=1, max_latency_s=0.0, queue_size=8)

    async def main() -> None:
        batcher.start()
        futures = [
            asyncio.ensure_future(batcher.submit(torch.rand(1, 1, 8, 8), i, 5.0)) for i in range(4)
        ]
        await asyncio.sleep(0.02)
        stopper = asyncio.ensure_future(asyncio.to_thread(batcher.stop))
        await asyncio.sleep(0.02)
        with pytest.raises(ShuttingDown):
            await batcher.submit(torch.rand(1, 1, 8, 8), "after", 5.0)
        fn.gate.set()
        await asyncio.gather(*futures)
        await stopper

    _run(main())
    assert fn.contexts == [0, 1, 2, 3]
    assert not [t for t in threading.enumerate() if t.name == "batcher-tiny" and t.is_alive()]


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher("x", lambda items: [], max_batch_size=0)
