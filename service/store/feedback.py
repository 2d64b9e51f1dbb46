"""Feedback on stored predictions: record it, read its history, count the flag's outcomes.

Ownership is enforced as in ``repository``: ``owner`` is the caller's API key id when it reads
its own predictions only, or ``None`` for a caller that reads every prediction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, func, select, update

from service.errors import PredictionNotFound
from service.store.database import Database
from service.store.tables import Prediction, PredictionFeedback


@dataclass(frozen=True)
class FeedbackEntry:
    """What a client said about one prediction, resolved against it.

    Attributes:
        prediction_id: The prediction.
        correct: Whether its predicted class was right.
        label: The true class index; None when only "wrong" was said.
    """

    prediction_id: str
    correct: bool
    label: int | None


def _owned(stmt: Any, owner: str | None) -> Any:
    return stmt if owner is None else stmt.where(Prediction.api_key_id == owner)


def predictions_for_feedback(
    db: Database, ids: Sequence[str], owner: str | None
) -> dict[str, dict[str, Any]]:
    """The model, predicted label and class count of each prediction in ``ids``.

    Raises:
        PredictionNotFound: An id is unknown or belongs to another key (the first such one).
    """
    unique = list(dict.fromkeys(ids))
    stmt = _owned(
        select(Prediction.id, Prediction.model, Prediction.label, Prediction.probabilities).where(
            Prediction.id.in_(unique)
        ),
        owner,
    )
    with db.session() as session:
        found = {
            row.id: {"model": row.model, "label": row.label, "classes": len(row.probabilities)}
            for row in session.execute(stmt)
        }
    for prediction_id in unique:
        if prediction_id not in found:
            raise PredictionNotFound(prediction_id)
    return found


def record_feedback(
    db: Database,
    entries: Sequence[FeedbackEntry],
    owner: str | None,
    author: str | None,
) -> list[dict[str, Any]]:
    """Store feedback on one or many predictions in one transaction: all of it, or none.

    Each entry first updates its prediction's current feedback, then appends to the history.
    The update takes the row's lock, so concurrent posts on one prediction commit one after the
    other, and the history's order (its ids) is the order in which they became current: the
    newest history entry is always the prediction's current feedback.

    Args:
        db: The store.
        entries: The feedback, in the order it is applied (a later one on the same id wins).
        owner: Whose predictions the caller may touch (None: every key's).
        author: The caller's API key id, kept in the history (None in open mode).

    Returns:
        One dict per entry: ``prediction_id``, ``correct``, ``label``, ``revision`` (the
        history entry's id) and ``created_at``.

    Raises:
        PredictionNotFound: An id is unknown or another key's (nothing is stored).
    """
    now = dt.datetime.now(dt.UTC)
    recorded = []
    with db.session() as session:
        for entry in entries:
            stmt = _owned(
                update(Prediction).where(Prediction.id == entry.prediction_id), owner
            ).values(feedback_correct=entry.correct, feedback_label=entry.label, feedback_at=now)
            if not session.execute(stmt).rowcount:
                raise PredictionNotFound(entry.prediction_id)  # rolls the whole batch back
            row = PredictionFeedback(
                prediction_id=entry.prediction_id,
                created_at=now,
                correct=entry.correct,
                label=entry.label,
                api_key_id=author,
            )
            session.add(row)
            session.flush()  # assigns the id: the revision
            recorded.append(
                {
                    "prediction_id": entry.prediction_id,
                    "correct": entry.correct,
                    "label": entry.label,
                    "revision": row.id,
                    "created_at": now,
                }
            )
    return recorded


def feedback_history(db: Database, prediction_id: str, owner: str | None) -> list[dict[str, Any]]:
    """Every feedback post on one prediction, oldest first.

    Raises:
        PredictionNotFound: The id is unknown or another key's.
    """
    predictions_for_feedback(db, [prediction_id], owner)
    stmt = (
        select(PredictionFeedback)
        .where(PredictionFeedback.prediction_id == prediction_id)
        .order_by(PredictionFeedback.id)
    )
    with db.session() as session:
        return [
            {
                "prediction_id": r.prediction_id,
                "correct": r.correct,
                "label": r.label,
                "revision": r.id,
                "created_at": r.created_at,
            }
            for r in session.scalars(stmt)
        ]


def delete_feedback_of(session: Any, prediction_ids: Sequence[str]) -> None:
    """Delete the feedback history of these predictions (before they are pruned).

    SQLite enforces no foreign keys unless asked, so the cascade is done here on every backend.
    """
    session.execute(
        delete(PredictionFeedback).where(PredictionFeedback.prediction_id.in_(prediction_ids))
    )


def flag_outcomes(
    db: Database,
    owner: str | None,
    *,
    model: str | None = None,
    since: dt.datetime | None = None,
) -> dict[str, dict[str, int]]:
    """How the flag did on the labelled predictions, per model, counted by the database.

    Args:
        db: The store.
        owner: Caller's key id, or None for every key's predictions.
        model: Only this model.
        since: Only predictions made at or after this time (None: all time).

    Returns:
        Per model: ``labelled``, ``wrong`` (feedback says the class was wrong), ``flagged``
        and ``flagged_wrong``; models without labelled predictions are left out.
    """
    wrong = Prediction.feedback_correct.is_(False)
    stmt = _owned(
        select(
            Prediction.model,
            func.count(),
            func.sum(case((wrong, 1), else_=0)),
            func.sum(case((Prediction.flagged, 1), else_=0)),
            func.sum(case((Prediction.flagged & wrong, 1), else_=0)),
        ).where(Prediction.feedback_correct.is_not(None)),
        owner,
    )
    if model is not None:
        stmt = stmt.where(Prediction.model == model)
    if since is not None:
        stmt = stmt.where(Prediction.created_at >= since)
    stmt = stmt.group_by(Prediction.model)
    with db.session() as session:
        return {
            name: {
                "labelled": int(n),
                "wrong": int(n_wrong or 0),
                "flagged": int(n_flagged or 0),
                "flagged_wrong": int(n_flagged_wrong or 0),
            }
            for name, n, n_wrong, n_flagged, n_flagged_wrong in session.execute(stmt)
        }


def confirmed_scores(
    db: Database, model: str, *, since: dt.datetime | None = None, correct: bool = True
) -> list[dict[str, Any]]:
    """The stored scores of ``model``'s predictions that feedback confirmed correct (or wrong).

    What a recalibration from traffic refits on; rows stored without scores (no detector, or
    before migration 0004) are left out. Every key's predictions count.

    Args:
        db: The store.
        model: The model's name.
        since: Only predictions made at or after this time.
        correct: The confirmed-correct predictions (True), or those confirmed wrong (False).

    Returns:
        One dict per prediction: ``id``, ``created_at`` and ``scores``, oldest first.
    """
    stmt = select(Prediction.id, Prediction.created_at, Prediction.scores).where(
        Prediction.model == model,
        Prediction.feedback_correct.is_(correct),
        Prediction.scores.is_not(None),
    )
    if since is not None:
        stmt = stmt.where(Prediction.created_at >= since)
    with db.session() as session:
        rows = session.execute(stmt.order_by(Prediction.id)).all()
    # A JSON null is not SQL NULL on every backend: the scores are checked here too.
    return [
        {"id": r.id, "created_at": r.created_at, "scores": r.scores}
        for r in rows
        if isinstance(r.scores, dict)
    ]
