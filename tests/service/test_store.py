"""The result store on SQLite and PostgreSQL: migrations, one-transaction writes, keyset pages."""

import datetime as dt
import multiprocessing
import random

import numpy as np
import pytest
import sqlalchemy as sa

from service.errors import InvalidCursor, PredictionNotFound
from service.store import Database, new_id
from service.store import repository as repo
from service.store.migrate import SchemaNotCurrent, current, head, upgrade, wait_until_current


def _row(
    model: str = "m",
    owner: str | None = None,
    flagged: bool = False,
    trust: float | None = 0.5,
    created_at: dt.datetime | None = None,
):
    return {
        "id": new_id(),
        "created_at": created_at or dt.datetime.now(dt.UTC),
        "model": model,
        "model_version": "1",
        "label": 3,
        "class_name": "dress",
        "probabilities": [0.1, 0.9],
        "trust_score": trust,
        "flagged": flagged,
        "features": [0.0] * 10,
        "api_key_id": owner,
        "request_id": "req",
    }


def test_upgrade_creates_tables_and_is_idempotent(db: Database) -> None:
    assert current(db.url) == head()
    db.upgrade()  # a second upgrade on a current database changes nothing
    names = set(sa.inspect(db.engine).get_table_names())
    assert {"predictions", "api_keys", "alembic_version"} <= names
    indexes = {i["name"] for i in sa.inspect(db.engine).get_indexes("predictions")}
    assert "ix_predictions_model_id" in indexes


def test_predictions_without_a_trust_score_are_stored_and_left_out_of_quantiles(
    db: Database,
) -> None:
    # A model served without a fitted detector stores trust_score null (migration 0002).
    rows = [_row(trust=None) for _ in range(3)] + [_row(trust=t) for t in (0.2, 0.4, 0.6)]
    repo.save_predictions(db, rows)
    assert repo.get_prediction(db, rows[0]["id"], None)["trust_score"] is None
    stats = repo.prediction_stats(db, None, model="m")
    assert stats["count"] == 6 and stats["trust_quantiles"]["p50"] == pytest.approx(0.4)
    repo.save_predictions(db, [_row(model="plain", trust=None)])
    plain = repo.prediction_stats(db, None, model="plain")
    assert plain["count"] == 1 and plain["trust_quantiles"] is None


def test_ids_sort_by_creation() -> None:
    ids = [new_id() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000 and all(len(i) == 26 for i in ids)


def test_round_trip_keeps_values_and_utc(db: Database) -> None:
    row = _row()
    repo.save_predictions(db, [row])
    got = repo.get_prediction(db, row["id"], None)
    assert got["probabilities"] == [0.1, 0.9] and got["features"] == [0.0] * 10
    assert got["created_at"].tzinfo is not None
    assert abs((got["created_at"] - row["created_at"]).total_seconds()) < 1e-3


def test_owner_isolation(db: Database) -> None:
    mine, theirs = _row(owner="a"), _row(owner="b")
    repo.save_predictions(db, [mine, theirs])
    assert repo.get_prediction(db, mine["id"], "a")["id"] == mine["id"]
    with pytest.raises(PredictionNotFound):
        repo.get_prediction(db, theirs["id"], "a")
    rows, _ = repo.list_predictions(db, "a")
    assert [r["id"] for r in rows] == [mine["id"]]


def test_batch_is_one_transaction(db: Database) -> None:
    good = _row()
    duplicate = dict(_row(), id=good["id"])  # primary-key clash fails the whole batch
    with pytest.raises(sa.exc.IntegrityError):
        repo.save_predictions(db, [good, duplicate])
    rows, _ = repo.list_predictions(db, None)
    assert rows == []


def test_keyset_pagination_and_filters(db: Database) -> None:
    rows = [_row(model="a" if i % 2 else "b", flagged=i % 3 == 0, trust=i / 10) for i in range(7)]
    repo.save_predictions(db, rows)
    seen, cursor = [], None
    while True:
        page, cursor = repo.list_predictions(db, None, limit=3, cursor=cursor)
        seen += [r["id"] for r in page]
        if cursor is None:
            break
    assert seen == [r["id"] for r in reversed(rows)]
    flagged_a, _ = repo.list_predictions(db, None, model="a", flagged=True)
    assert {r["id"] for r in flagged_a} == {
        r["id"] for r in rows if r["model"] == "a" and r["flagged"]
    }
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert repo.list_predictions(db, None, since=future)[0] == []
    assert len(repo.list_predictions(db, None, until=future)[0]) == 7
    with pytest.raises(InvalidCursor):
        repo.list_predictions(db, None, cursor="not-a-cursor")


def test_stats(db: Database) -> None:
    repo.save_predictions(db, [_row(flagged=i < 2, trust=(i + 1) / 10) for i in range(10)])
    stats = repo.prediction_stats(db, None, model="m")
    assert stats["count"] == 10 and stats["flagged"] == 2 and stats["flag_rate"] == 0.2
    assert stats["trust_quantiles"]["p50"] == pytest.approx(0.55)
    assert repo.prediction_stats(db, "nobody")["count"] == 0


def test_stats_quantiles_are_exact_over_the_whole_window(db: Database) -> None:
    # Computed in SQL over every row (it used to load up to 100,000 rows into Python).
    rng = random.Random(0)
    scores = [rng.random() for _ in range(1001)]
    repo.save_predictions(db, [_row(trust=t, flagged=t < 0.05) for t in scores])
    repo.save_predictions(db, [_row(model="other", trust=0.0)])
    stats = repo.prediction_stats(db, None, model="m")
    assert stats["count"] == 1001 and stats["flagged"] == sum(t < 0.05 for t in scores)
    expected = np.quantile(scores, [0.05, 0.25, 0.5, 0.75, 0.95])
    got = [stats["trust_quantiles"][k] for k in ("p05", "p25", "p50", "p75", "p95")]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    one = repo.prediction_stats(db, None, model="other")
    assert one["trust_quantiles"] == dict.fromkeys(("p05", "p25", "p50", "p75", "p95"), 0.0)
    assert repo.prediction_stats(db, None, model="none")["trust_quantiles"] is None


def test_prune_deletes_only_rows_older_than_the_cutoff(db: Database) -> None:
    now = dt.datetime.now(dt.UTC)
    old = [_row(created_at=now - dt.timedelta(days=40 + i)) for i in range(7)]
    recent = [_row(created_at=now - dt.timedelta(days=1)) for _ in range(3)]
    repo.save_predictions(db, old + recent)
    assert repo.prune_predictions(db, now - dt.timedelta(days=30), chunk=2) == 7
    rows, _ = repo.list_predictions(db, None)
    assert {r["id"] for r in rows} == {r["id"] for r in recent}
    assert repo.prune_predictions(db, now - dt.timedelta(days=30)) == 0


def _upgrade_in_process(url: str, start) -> None:
    start.wait(30)
    upgrade(url)


def test_concurrent_migrations_take_turns(database_url: str) -> None:
    # Replicas starting together used to race on an empty database (duplicate tables).
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_upgrade_in_process, args=(database_url, start)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert current(database_url) == head()


def test_a_replica_that_does_not_migrate_waits_for_the_schema(database_url: str) -> None:
    with pytest.raises(SchemaNotCurrent, match="gga db upgrade"):
        wait_until_current(database_url, timeout_s=0.3, poll_s=0.1)
    upgrade(database_url)
    wait_until_current(database_url, timeout_s=5)


def test_existing_keys_become_predict_keys(database_url: str) -> None:
    # A key made before scopes existed (revision 0002) could do everything a key could do then;
    # migration 0003 makes it a predict key: it still classifies and reads its own predictions.
    from alembic import command

    from service.access import Scope
    from service.auth import Authenticator, _digest
    from service.store.migrate import alembic_config
    from service.store.tables import ApiKey

    upgrade(database_url, "0002")
    old = {
        "id": "0ld0ld0ld0ld",
        "name": "from-0002",
        "salt": "salt",
        "secret_hash": _digest("salt", "", "s3cret"),
        "created_at": dt.datetime.now(dt.UTC),
        "revoked_at": None,
    }
    db = Database(database_url)
    try:
        with db.engine.begin() as conn:
            conn.execute(ApiKey.__table__.insert(), [old])  # no scope column at 0002
        upgrade(database_url)
        assert current(database_url) == head()
        assert repo.get_key(db, old["id"])["scope"] == "predict"
        caller = Authenticator(db).authenticate(f"gga_{old['id']}_s3cret")
        assert caller.key_id == old["id"] and caller.scope == Scope.PREDICT
        assert repo.set_key_scope(db, old["id"], "admin")
        assert [k["scope"] for k in repo.list_keys(db)] == ["admin"]
        command.downgrade(alembic_config(database_url), "0002")  # the column goes, the key stays
        upgrade(database_url)
        assert repo.get_key(db, old["id"])["scope"] == "predict"
    finally:
        db.dispose()
