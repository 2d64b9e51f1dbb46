"""Feedback in the result store on SQLite and PostgreSQL: history, ownership, all-or-nothing
batches, the stored scores, and the flag's live quality against a hand count."""

import datetime as dt
import random
import time

import pytest
import sqlalchemy as sa
from alembic import command

from service.errors import PredictionNotFound
from service.flag_quality import FlagQuality, flag_quality, wilson_interval
from service.store import Database, new_id
from service.store import feedback as fb
from service.store import repository as repo
from service.store.feedback import FeedbackEntry
from service.store.migrate import alembic_config, current, head, upgrade
from service.store.tables import Prediction


def _row(model="m", owner=None, flagged=False, label=3, created_at=None, scores=None):
    return {
        "id": new_id(),
        "created_at": created_at or dt.datetime.now(dt.UTC),
        "model": model,
        "model_version": "1",
        "label": label,
        "class_name": "dress",
        "probabilities": [0.1] * 10,
        "trust_score": 0.5,
        "flagged": flagged,
        "features": [0.0] * 10,
        "api_key_id": owner,
        "request_id": "req",
        "scores": scores,
    }


def test_migration_0004_adds_the_feedback_table_and_columns(db: Database) -> None:
    assert current(db.url) == head() == "0004"
    inspector = sa.inspect(db.engine)
    assert "prediction_feedback" in inspector.get_table_names()
    columns = {c["name"] for c in inspector.get_columns("predictions")}
    assert {"scores", "feedback_correct", "feedback_label", "feedback_at"} <= columns


def test_rows_from_before_0004_upgrade_without_scores_or_feedback_and_downgrade_back(
    database_url: str,
) -> None:
    upgrade(database_url, "0003")
    old = {k: v for k, v in _row().items() if k != "scores"}
    db = Database(database_url)
    try:
        with db.engine.begin() as conn:
            columns = (sa.column(k, Prediction.__table__.c[k].type) for k in old)
            conn.execute(sa.table("predictions", *columns).insert(), [old])
        upgrade(database_url)
        got = repo.get_prediction(db, old["id"], None)
        assert got["scores"] is None and got["feedback"] is None
        fb.record_feedback(db, [FeedbackEntry(old["id"], False, 1)], None, None)
        assert repo.get_prediction(db, old["id"], None)["feedback"]["correct"] is False
        command.downgrade(alembic_config(database_url), "0003")  # the feedback goes, rows stay
        assert current(database_url) == "0003"
        assert "prediction_feedback" not in sa.inspect(db.engine).get_table_names()
        upgrade(database_url)
        assert repo.get_prediction(db, old["id"], None)["feedback"] is None
    finally:
        db.dispose()


def test_scores_round_trip(db: Database) -> None:
    scores = {"fused": 1.25, "views": {"gga-csm": 0.5, "knn": -2.0}}
    rows = [_row(scores=scores), _row(scores=None)]
    repo.save_predictions(db, rows)
    assert repo.get_prediction(db, rows[0]["id"], None)["scores"] == scores
    assert repo.get_prediction(db, rows[1]["id"], None)["scores"] is None


def test_a_later_post_replaces_the_current_feedback_and_the_history_is_kept(db: Database) -> None:
    row = _row(owner="alice")
    repo.save_predictions(db, [row])
    first = fb.record_feedback(db, [FeedbackEntry(row["id"], True, 3)], "alice", "alice")
    second = fb.record_feedback(db, [FeedbackEntry(row["id"], False, 7)], None, "dashboard")
    assert second[0]["revision"] > first[0]["revision"]
    stored = repo.get_prediction(db, row["id"], None)["feedback"]
    assert stored["correct"] is False and stored["label"] == 7
    history = fb.feedback_history(db, row["id"], "alice")
    assert [(h["correct"], h["label"]) for h in history] == [(True, 3), (False, 7)]


def test_another_keys_prediction_is_not_found_and_nothing_is_written(db: Database) -> None:
    row = _row(owner="alice")
    repo.save_predictions(db, [row])
    with pytest.raises(PredictionNotFound):
        fb.record_feedback(db, [FeedbackEntry(row["id"], True, 3)], "bob", "bob")
    with pytest.raises(PredictionNotFound):
        fb.predictions_for_feedback(db, [row["id"]], "bob")
    with pytest.raises(PredictionNotFound):
        fb.feedback_history(db, row["id"], "bob")
    assert repo.get_prediction(db, row["id"], None)["feedback"] is None


def test_a_batch_is_all_or_nothing(db: Database) -> None:
    rows = [_row(), _row()]
    repo.save_predictions(db, rows)
    batch = [FeedbackEntry(rows[0]["id"], True, 3), FeedbackEntry("missing", True, 3)]
    with pytest.raises(PredictionNotFound):
        fb.record_feedback(db, batch, None, None)
    assert repo.get_prediction(db, rows[0]["id"], None)["feedback"] is None
    assert fb.feedback_history(db, rows[0]["id"], None) == []


def test_list_filters_by_feedback_and_prune_removes_the_history(db: Database) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    rows = [_row(created_at=old), _row(), _row()]
    repo.save_predictions(db, rows)
    fb.record_feedback(
        db,
        [FeedbackEntry(rows[0]["id"], True, 3), FeedbackEntry(rows[1]["id"], False, 1)],
        None,
        None,
    )

    def ids(**filters):
        return {r["id"] for r in repo.list_predictions(db, None, **filters)[0]}

    assert ids(feedback="correct") == {rows[0]["id"]}
    assert ids(feedback="wrong") == {rows[1]["id"]}
    assert ids(feedback="labelled") == {rows[0]["id"], rows[1]["id"]}
    assert ids(feedback="none") == {rows[2]["id"]}
    assert repo.prune_predictions(db, dt.datetime.now(dt.UTC) - dt.timedelta(days=1)) == 1
    with db.engine.connect() as conn:
        left = conn.execute(sa.text("SELECT prediction_id FROM prediction_feedback")).scalars()
        assert set(left) == {rows[1]["id"]}


def test_live_statistics_equal_a_hand_count_on_1000_labelled_predictions(db: Database) -> None:
    """The floor: precision, recall, false alarms and the labelled count of 1,000 labelled
    predictions (and unlabelled, old and other keys' ones around them) equal a count by hand."""
    rng = random.Random(28)
    now = dt.datetime.now(dt.UTC)
    rows, truth = [], {}
    for i in range(1400):
        model = rng.choice(["m", "n"])
        owner = rng.choice(["alice", "bob"])
        # 1,200 in the last day, 200 a week ago (outside a 24h window).
        age = dt.timedelta(hours=rng.uniform(0, 23)) if i < 1200 else dt.timedelta(days=7)
        row = _row(model=model, owner=owner, flagged=rng.random() < 0.2, created_at=now - age)
        rows.append(row)
        if i < 1000:  # 1,000 labelled in the window; the others stay unlabelled or old
            truth[row["id"]] = rng.random() < 0.85  # correct?
        elif i >= 1200 and rng.random() < 0.5:
            truth[row["id"]] = rng.random() < 0.5
    repo.save_predictions(db, rows)
    entries = [FeedbackEntry(i, ok, 3 if ok else None) for i, ok in truth.items()]
    for start in range(0, len(entries), 250):
        fb.record_feedback(db, entries[start : start + 250], None, None)

    def by_hand(model: str, owner: str | None, since: dt.datetime | None) -> dict[str, int]:
        chosen = [
            r
            for r in rows
            if r["model"] == model
            and r["id"] in truth
            and (owner is None or r["api_key_id"] == owner)
            and (since is None or r["created_at"] >= since)
        ]
        wrong = [r for r in chosen if not truth[r["id"]]]
        return {
            "labelled": len(chosen),
            "wrong": len(wrong),
            "flagged": sum(r["flagged"] for r in chosen),
            "flagged_wrong": sum(r["flagged"] for r in wrong),
        }

    since = now - dt.timedelta(hours=24)
    total = 0
    for owner in (None, "alice"):
        for window in (since, None):
            got = flag_quality(db, owner, {"m": 0.05, "n": 0.1}, since=window)
            for model in ("m", "n"):
                hand = by_hand(model, owner, window)
                quality = got[model]
                assert quality == FlagQuality(**hand, alpha={"m": 0.05, "n": 0.1}[model])
                correct = hand["labelled"] - hand["wrong"]
                assert quality.precision == hand["flagged_wrong"] / hand["flagged"]
                assert quality.recall == hand["flagged_wrong"] / hand["wrong"]
                false_alarms = hand["flagged"] - hand["flagged_wrong"]
                assert quality.false_alarm_rate == false_alarms / correct
                if owner is None and window is since:
                    total += hand["labelled"]
    assert total == 1000
    only_m = flag_quality(db, None, {}, model="m", since=since)
    assert set(only_m) == {"m"} and only_m["m"].alpha is None


def test_the_gauges_refresh_in_the_background_not_on_the_scrape(db: Database) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from service.flag_quality import FlagQualityRefresher
    from service.metrics import ServiceMetrics

    row = _row(model="m", flagged=True)
    repo.save_predictions(db, [row])
    fb.record_feedback(db, [FeedbackEntry(row["id"], True, 3)], None, None)
    metrics = ServiceMetrics(CollectorRegistry())
    refresher = FlagQualityRefresher(db, metrics, lambda: {"m": 0.05})
    metrics.registry.register(refresher)
    generate_latest(metrics.registry)  # starts the first refresh, does not wait for it
    for _ in range(100):
        body = generate_latest(metrics.registry).decode()
        if 'gga_flag_quality_labelled{model="m",window="24h"} 1.0' in body:
            break
        time.sleep(0.05)
    assert 'gga_flag_quality_false_alarm_rate{model="m",window="7d"} 1.0' in body
    assert 'gga_flag_quality_alpha{model="m",window="24h"} 0.05' in body
    assert 'gga_flag_quality_precision{model="m",window="24h"} 0.0' in body
    assert 'gga_flag_quality_recall{model="m",window="24h"} NaN' in body  # no wrong one: 0/0


def test_wilson_interval_matches_its_closed_form() -> None:
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + z2)), 1.0)
    low, high = wilson_interval(5, 100)
    assert low == pytest.approx(0.02154, abs=1e-4) and high == pytest.approx(0.11175, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    quality = FlagQuality(labelled=1000, wrong=0, flagged=150, flagged_wrong=0, alpha=0.05)
    assert quality.false_alarms_above_alpha is True
    assert quality.precision == 0.0 and quality.recall is None
