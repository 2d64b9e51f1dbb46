"""A served model's two stages: the engine keeps computing while the store writes, a store that
cannot be reached answers 503 (not 500) without stopping the model, and a deadline that passes
during compute refuses the request unstored while one passing during the commit does not."""

import asyncio
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from models.repository import ModelRepository
from service.errors import DeadlineExceeded, StoreUnavailable
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
        assert repo.get_prediction(db, result.ids[0], None)["label"] == result.out.labels[0]
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


class GatedPipeline:
    """The real pipeline, held inside its call until ``release`` is set."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, x, **kwargs):
        self.entered.set()
        self.release.wait(30)
        return self.inner(x, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_a_deadline_passing_during_compute_answers_503_and_stores_nothing(
    model_repo: Path, tmp_path: Path, fmnist_test
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'gga.db'}")
    db.upgrade()
    model = _served(model_repo, db)
    gated = GatedPipeline(model.pipeline)
    model.pipeline = gated
    x = fmnist_test.float()

    async def main() -> list:
        late = asyncio.ensure_future(model.predict(x[:1], RequestContext("late"), 0.3))
        await asyncio.to_thread(gated.entered.wait, 30)
        patient = asyncio.ensure_future(model.predict(x[1:2], RequestContext("patient"), 60.0))
        await asyncio.sleep(0.6)  # "late"'s deadline passes while its batch computes
        gated.release.set()
        return await asyncio.gather(late, patient, return_exceptions=True)

    try:
        late, patient = asyncio.run(main())
    finally:
        gated.release.set()
        model.stop()
    assert isinstance(late, DeadlineExceeded) and late.status == 503, late
    assert "nothing was stored" in late.message
    rows, _ = repo.list_predictions(db, None)
    assert [r["request_id"] for r in rows] == ["patient"] and rows[0]["id"] == patient.ids[0]
    db.dispose()


def test_a_deadline_passing_while_the_rows_commit_answers_with_them(
    model_repo: Path, postgres_url: str, fmnist_test
) -> None:
    db = Database(postgres_url)
    db.upgrade()
    model = _served(model_repo, db)
    blocker = db.engine.connect()
    blocker.execute(sa.text("LOCK TABLE predictions IN EXCLUSIVE MODE"))
    released = threading.Event()
    waiting = sa.text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'predictions'::regclass"
    )

    async def main():
        start = time.monotonic()
        pending = asyncio.ensure_future(
            model.predict(fmnist_test.float()[:1], RequestContext("slow-store"), 3.0)
        )
        with db.engine.connect() as probe:  # the insert waits on the lock: handed to the store
            while not probe.execute(waiting).scalar() and time.monotonic() - start < 3.0:
                await asyncio.sleep(0.02)
        assert time.monotonic() - start < 3.0, "the batch never reached the store in time"
        await asyncio.sleep(3.3 - (time.monotonic() - start))  # now past its deadline
        assert not pending.done()
        blocker.commit()
        released.set()
        return await pending

    try:
        result = asyncio.run(main())
    finally:
        if not released.is_set():
            blocker.rollback()
        blocker.close()
        model.stop()
    # Stored, so answered with its rows: never reported as failed.
    assert repo.get_prediction(db, result.ids[0], None)["request_id"] == "slow-store"
    db.dispose()
