"""The store gone under 16 clients, over real HTTP, with API keys on: PostgreSQL and SQLite.

PostgreSQL, gone for 8 s: the shared server is never stopped; the service reaches it through a
TCP proxy the test cuts (every connection closed, new ones refused) and restores. Every path
must answer 200 or 503 with ``Retry-After``, never a 500 or a dropped connection: predict (the
persist path), the key check (once its cache has expired), reads, statistics, the models list;
the console's page does not need the store at all.

SQLite, locked for 15 s: another process holds the database's write lock (``BEGIN EXCLUSIVE``),
as an operator's ``sqlite3`` session, a ``VACUUM`` or a bulk delete does; it is the outage a
SQLite store meets (its file does not go away, and a full disk or an unwritable folder cannot be
made on a shared test machine whose tests run as root). The service's writes wait SQLite's busy
timeout (10 s) and then fail with "database is locked": predict answers 503, while reads, which
WAL mode lets go on beside a writer, keep answering 200.

Either way, every prediction answered 200 is in the store afterwards.
"""

import asyncio
import collections
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from sqlalchemy.engine import make_url

from service.auth import create_key
from service.store import Database
from service.store import repository as repo
from tests.service.conftest import _postgres_schema_url
from tests.service.sqlite_lock import SqliteLock
from tests.service.support import LiveServer
from tests.service.tcp_proxy import TcpProxy

MODEL = "fashion-mnist-cnn"
PREDICT = f"/v1/models/{MODEL}/predict"
CLIENTS = 16
OUTAGE_S = 8.0
# Longer than SQLite's busy timeout (10 s, service/store/database.py): shorter, writes only wait.
SQLITE_LOCK_S = 15.0
BEFORE_S, AFTER_S = 4.0, 10.0
# Generous: the floor is 5 s (measured and printed below); this only catches "never recovers".
RECOVERY_BOUND_S = 30.0


@dataclass
class Answer:
    path: str
    sent: float
    answered: float
    status: int
    code: str = ""
    retry_after: str | None = None
    prediction_id: str | None = None


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)
    errors: list[tuple[str, float, str]] = field(default_factory=list)
    cut_at: float = 0.0
    restored_at: float = 0.0


@pytest.fixture
def store_behind_proxy():
    """(real URL, URL through the proxy, proxy) of an empty PostgreSQL schema."""
    for url in _postgres_schema_url():
        real = make_url(url)
        proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432)).start()
        via_proxy = real.set(host="127.0.0.1", port=proxy.port)
        try:
            yield url, via_proxy.render_as_string(hide_password=False), proxy
        finally:
            proxy.close()


def _route(path: str) -> str:
    path = path.split("?")[0]
    return "/v1/predictions/{id}" if path.startswith("/v1/predictions/") else path


def _record(run: Run, path: str, sent: float, r: httpx.Response) -> Answer:
    code = ""
    if r.status_code != 200 and r.headers.get("content-type", "").startswith("application/json"):
        error = r.json()["error"]
        code = error["code"] if isinstance(error, dict) else ""
    answer = Answer(path, sent, time.monotonic(), r.status_code, code, r.headers.get("retry-after"))
    if r.status_code == 200 and path == PREDICT:
        answer.prediction_id = r.json()["predictions"][0]["id"]
    run.answers.append(answer)
    return answer


class Outage(Protocol):
    def cut(self) -> None: ...
    def restore(self) -> None: ...


async def _drive(url: str, key: str, png: bytes, outage: Outage, outage_s: float) -> Run:
    run = Run()
    headers = {"X-API-Key": key}
    limits = httpx.Limits(max_connections=CLIENTS + 4, max_keepalive_connections=CLIENTS + 4)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=limits, headers=headers
    ) as client:
        start = time.monotonic()
        stop = start + BEFORE_S + outage_s + AFTER_S

        async def call(path: str, method: str = "GET", **kwargs) -> Answer | None:
            sent = time.monotonic()
            try:
                r = await client.request(method, path, **kwargs)
            except httpx.HTTPError as err:
                run.errors.append((path, sent, repr(err)))
                return None
            return _record(run, path, sent, r)

        async def predictor() -> None:
            while time.monotonic() < stop:
                files = {"file": ("x.png", png, "image/png")}
                answer = await call(PREDICT, "POST", files=files)
                if answer is not None and answer.status == 503:
                    await asyncio.sleep(0.1)  # a client that honours Retry-After, briefly

        async def reader() -> None:
            paths = ["/v1/predictions?limit=5", "/v1/stats", "/v1/models", "/"]
            while time.monotonic() < stop:
                stored = [a.prediction_id for a in run.answers if a.prediction_id]
                for path in [*paths, *([f"/v1/predictions/{stored[-1]}"] if stored else [])]:
                    await call(path)
                await asyncio.sleep(0.25)

        async def cut_and_restore() -> None:
            await asyncio.sleep(BEFORE_S)
            outage.cut()
            run.cut_at = time.monotonic()
            await asyncio.sleep(outage_s)
            outage.restore()
            run.restored_at = time.monotonic()

        await asyncio.gather(*(predictor() for _ in range(CLIENTS)), reader(), cut_and_restore())
    return run


def _only_200_and_503(run: Run) -> list[Answer]:
    """Check what every outage must give: no dropped connection, 200 or 503 with Retry-After,
    the console's page untouched. Returns the 503s."""
    by_status = collections.Counter((_route(a.path), a.status, a.code) for a in run.answers)
    print(f"answers by (path, status, code): {dict(by_status)}")
    assert not run.errors, f"{len(run.errors)} dropped: {run.errors[:3]}"
    assert {a.status for a in run.answers} <= {200, 503}, by_status
    refused = [a for a in run.answers if a.status == 503]
    assert refused and all(a.retry_after and int(a.retry_after) >= 1 for a in refused)
    assert {a.code for a in refused} <= {"store_unavailable", "overloaded", "queue_full"}
    assert all(a.status == 200 for a in run.answers if a.path == "/")
    return refused


def _recovered(run: Run) -> None:
    after = [a for a in run.answers if a.status == 200 and a.path == PREDICT]
    after = [a for a in after if a.answered > run.restored_at]
    assert after, "no prediction succeeded after the store came back"
    recovery_s = min(a.answered for a in after) - run.restored_at
    print(f"first 200 after the store's return: {recovery_s:.2f} s")
    assert recovery_s < RECOVERY_BOUND_S


def _nothing_lost(db: Database, run: Run) -> None:
    ids = [a.prediction_id for a in run.answers if a.prediction_id]
    missing = []
    for pid in ids:
        try:
            repo.get_prediction(db, pid, None)
        except LookupError:
            missing.append(pid)
    assert not missing, f"{len(missing)} of {len(ids)} acknowledged predictions were lost"
    print(f"{len(ids)} acknowledged predictions, all stored")


def test_an_outage_answers_only_200_and_503_and_loses_nothing(
    store_behind_proxy, model_repo: Path, tmp_path: Path, fmnist_pngs: list[bytes]
) -> None:
    real_url, proxied_url, proxy = store_behind_proxy
    db = Database(real_url)
    db.upgrade()
    _, key = create_key(db, "outage")
    server = LiveServer(model_repo, proxied_url, tmp_path, GGA_CALLER_CONCURRENCY=None).start()
    try:
        run = asyncio.run(_drive(server.url, key, fmnist_pngs[0], proxy, OUTAGE_S))
        assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200
    finally:
        assert server.stop() == 0
    try:
        _only_200_and_503(run)
        # Each path met the outage and answered it with 503 (the page itself needs no store).
        during = [a for a in run.answers if run.cut_at + 6 < a.sent < run.restored_at]
        for path in (PREDICT, "/v1/predictions", "/v1/predictions/{id}", "/v1/stats", "/v1/models"):
            assert any(_route(a.path) == path and a.status == 503 for a in during), path
        _recovered(run)
        _nothing_lost(db, run)
    finally:
        db.dispose()


def test_a_locked_sqlite_store_answers_only_200_and_503_and_loses_nothing(
    model_repo: Path, tmp_path: Path, fmnist_pngs: list[bytes]
) -> None:
    path = tmp_path / "gga.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    _, key = create_key(db, "outage")
    lock = SqliteLock(path).start()
    server = LiveServer(model_repo, db.url, tmp_path, GGA_CALLER_CONCURRENCY=None).start()
    try:
        run = asyncio.run(_drive(server.url, key, fmnist_pngs[0], lock, SQLITE_LOCK_S))
        assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200
    finally:
        lock.close()
        assert server.stop() == 0
    try:
        refused = _only_200_and_503(run)
        # The writes met the lock: after the busy timeout, "database is locked" is a 503.
        assert any(a.path == PREDICT and a.code == "store_unavailable" for a in refused)
        # Readers are not writers: WAL lets every read, and the key check, go on beside the lock.
        assert all(a.status == 200 for a in run.answers if a.path != PREDICT)
        # Nothing hangs: a write waits the busy timeout at most, then fails or gets the lock.
        longest = max(a.answered - a.sent for a in run.answers)
        print(f"longest answer: {longest:.1f} s (lock held {SQLITE_LOCK_S:g} s)")
        assert longest < SQLITE_LOCK_S + 10
        _recovered(run)
        _nothing_lost(db, run)
    finally:
        db.dispose()
