"""A served model's two stages: the engine keeps computing while the store writes, and a store
that cannot be reached answers 503 (not 500) without stopping the model."""

import asyncio
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from models.repository import ModelRepository
from service.errors import StoreUnavailable
from service.metrics import ServiceMetrics
from service.model import BatchingConfig, RequestContext, ServedModel
from service.store import Database
from service.store import repository as repo

MODEL = "fashion-mnist-cnn"


class CountingPipeline:
    """The real pipeline, counting the batches it has scored (readable from another thread)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, x, **kwargs):
        out = self.inner(x, **kwargs)
        self.calls += 1
        return out

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _served(model_repo: Path, db: Database, metrics: ServiceMetrics | None = None) -> ServedModel:
    model = ServedModel(
        MODEL,
        ModelRepository(model_repo),
        db,
        metrics or ServiceMetrics(),
        batching=BatchingConfig(max_batch_size=4, max_latency_s=0.0, queue_size=16),
        warmup_batch_sizes=[1, 4],
    )
    model.load()
    return model


def test_engine_computes_the_next_batch_while_the_store_is_busy(
    model_repo: Path, postgres_url: str, fmnist_test
) -> None:
    db = Database(postgres_url)
    db.upgrade()
    model = _served(model_repo, db)
    counting = CountingPipeline(model.pipeline)
    model.pipeline = counting
    x = fmnist_test.float()
    # Another session locks the table: the first batch's insert waits until it commits.
    blocker = db.engine.connect()
    blocker.execute(sa.text("LOCK TABLE predictions IN EXCLUSIVE MODE"))
    released = threading.Event()

    async def main() -> list:
        first = asyncio.ensure_future(model.predict(x[:1], RequestContext("first"), 60.0))
        while counting.calls < 1:
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(model.predict(x[1:2], RequestContext("second"), 60.0))
        deadline = time.monotonic() + 20
        while counting.calls < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        computed_while_blocked = counting.calls
        assert not first.done() and not second.done(), "answered before its rows were stored"
        blocker.commit()
        released.set()
        return [computed_while_blocked, *(await asyncio.gather(first, second))]

    try:
        computed, first, second = asyncio.run(main())
    finally:
        if not released.is_set():
            blocker.rollback()
        blocker.close()
        model.stop()
    # Before: the inference thread itself waited on the store, so the second batch waited too.
    assert computed == 2, "the second batch was not computed while the first one was stored"
    for result in (first, second):
        assert repo.get_prediction(db, result[0]["id"], None)["label"] == result[0]["label"]
    db.dispose()


def test_unreachable_store_answers_503_and_reports_it(model_repo: Path, fmnist_test) -> None:
    metrics = ServiceMetrics()
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2")
    model = _served(model_repo, db, metrics)

    async def main():
        return await model.predict(fmnist_test.float()[:1], RequestContext("r"), 30.0)

    try:
        with pytest.raises(StoreUnavailable) as info:
            asyncio.run(main())
    finally:
        model.stop()
    assert info.value.status == 503 and info.value.headers["Retry-After"]
    assert metrics.registry.get_sample_value("gga_store_up") == 0
    failures = metrics.registry.get_sample_value(
        "gga_batch_failures_total", {"model": MODEL, "stage": "persist"}
    )
    assert failures == 1
    db.dispose()
