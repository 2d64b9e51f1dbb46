"""Reads and writes of the result store; every function takes the :class:`Database` first.

Ownership is enforced here, not in handlers: ``owner`` is the API key id of the caller, or
``None`` in open mode (no keys configured), where every prediction is visible.
"""

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, case, delete, func, select, update

from service.errors import InvalidCursor, PredictionNotFound
from service.store.database import Database
from service.store.feedback import delete_feedback_of
from service.store.tables import ApiKey, Prediction

_CURSOR_PREFIX = "p1:"
MAX_PAGE = 500


def save_predictions(db: Database, rows: Sequence[dict[str, Any]]) -> None:
    """Insert one micro-batch's predictions in one transaction, committed on return.

    Args:
        db: The store.
        rows: One dict per prediction with the columns of :class:`Prediction`.
    """
    if not rows:
        return
    with db.session() as session:
        session.execute(Prediction.__table__.insert(), list(rows))


def _owned(stmt: Select[Any], owner: str | None) -> Select[Any]:
    return stmt if owner is None else stmt.where(Prediction.api_key_id == owner)


def get_prediction(db: Database, prediction_id: str, owner: str | None) -> dict[str, Any]:
    """One stored prediction.

    Raises:
        PredictionNotFound: No such id, or it belongs to another key (the same answer, so a key
            cannot learn that another key's id exists).
    """
    stmt = _owned(select(Prediction).where(Prediction.id == prediction_id), owner)
    with db.session() as session:
        row = session.scalars(stmt).first()
        if row is None:
            raise PredictionNotFound(prediction_id)
        return row.to_dict()


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The id a cursor continues after.

    Raises:
        InvalidCursor: The cursor was not made by :func:`encode_cursor`.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise InvalidCursor() from err
    if not text.startswith(_CURSOR_PREFIX) or len(text) > 64:
        raise InvalidCursor()
    return text[len(_CURSOR_PREFIX) :]


def list_predictions(
    db: Database,
    owner: str | None,
    *,
    model: str | None = None,
    flagged: bool | None = None,
    feedback: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of predictions, newest first, with keyset pagination.

    Args:
        db: The store.
        owner: Caller's key id, or None in open mode.
        model: Only this model's predictions.
        flagged: Only flagged (True) or unflagged (False) ones.
        feedback: Only those whose feedback says ``correct`` or ``wrong``, those with any
            (``labelled``) or those without (``none``).
        since: Created at or after this time.
        until: Created before this time.
        limit: Page size, 1..500.
        cursor: ``next_cursor`` of the previous page.

    Returns:
        The page's rows and the cursor of the next page (None on the last page).

    Raises:
        InvalidCursor: The cursor is malformed.
    """
    limit = max(1, min(limit, MAX_PAGE))
    stmt = _owned(select(Prediction), owner)
    if model is not None:
        stmt = stmt.where(Prediction.model == model)
    if flagged is not None:
        stmt = stmt.where(Prediction.flagged == flagged)
    if feedback is not None:
        stmt = stmt.where(_FEEDBACK_FILTERS[feedback])
    if since is not None:
        stmt = stmt.where(Prediction.created_at >= since)
    if until is not None:
        stmt = stmt.where(Prediction.created_at < until)
    if cursor:
        stmt = stmt.where(Prediction.id < decode_cursor(cursor))
    # One row more than asked tells whether a next page exists without a COUNT.
    stmt = stmt.order_by(Prediction.id.desc()).limit(limit + 1)
    with db.session() as session:
        rows = [r.to_dict() for r in session.scalars(stmt)]
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1]["id"])
    return rows, None


# The History page's feedback filter, by its query value.
_FEEDBACK_FILTERS = {
    "correct": Prediction.feedback_correct.is_(True),
    "wrong": Prediction.feedback_correct.is_(False),
    "labelled": Prediction.feedback_correct.is_not(None),
    "none": Prediction.feedback_correct.is_(None),
}

QUANTILES: dict[str, float] = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}


def prediction_stats(
    db: Database,
    owner: str | None,
    *,
    model: str | None = None,
    since: dt.datetime | None = None,
) -> dict[str, Any]:
    """Counts, flag rate and trust-score quantiles of the predictions since ``since``.

    Everything is computed by the database over every row in the window; no row is loaded into
    Python. Quantiles interpolate linearly between order statistics (PostgreSQL's
    ``percentile_cont``, numpy's default), on SQLite by reading the two rows around each
    quantile's position. Quantiles are over the rows that have a trust score (a model served
    without a detector stores none); ``None`` when no row has one.

    Args:
        db: The store.
        owner: Caller's key id, or None in open mode.
        model: Only this model.
        since: Window start (None: all time).

    Returns:
        ``count``, ``flagged``, ``flag_rate`` and ``trust_quantiles`` (p05, p25, p50, p75, p95).
    """

    def scoped(stmt: Select[Any]) -> Select[Any]:
        stmt = _owned(stmt, owner)
        if model is not None:
            stmt = stmt.where(Prediction.model == model)
        if since is not None:
            stmt = stmt.where(Prediction.created_at >= since)
        return stmt

    counts = scoped(
        select(
            func.count(),
            func.sum(case((Prediction.flagged, 1), else_=0)),
            func.count(Prediction.trust_score),  # rows with a trust score (COUNT skips nulls)
        )
    )
    with db.session() as session:
        count, n_flagged, scored = session.execute(counts).one()
        count, n_flagged, scored = int(count or 0), int(n_flagged or 0), int(scored or 0)
        quantiles = None
        if scored:
            if db.backend == "postgresql":
                columns = [
                    func.percentile_cont(q).within_group(Prediction.trust_score)
                    for q in QUANTILES.values()
                ]
                values = session.execute(scoped(select(*columns))).one()
            else:
                values = [
                    _quantile_by_offset(session, scoped, scored, q) for q in QUANTILES.values()
                ]
            quantiles = dict(zip(QUANTILES, map(float, values), strict=True))
    return {
        "count": count,
        "flagged": n_flagged,
        "flag_rate": (n_flagged / count) if count else None,
        "trust_quantiles": quantiles,
    }


def _quantile_by_offset(session: Any, scoped: Any, count: int, q: float) -> float:
    """The ``q`` quantile of the scoped trust scores, from the two order statistics around it.

    ``count`` is the number of scoped rows with a trust score; rows without one are skipped.
    """
    position = (count - 1) * q
    lower = int(position)
    stmt = (
        scoped(select(Prediction.trust_score))
        .where(Prediction.trust_score.is_not(None))
        .order_by(Prediction.trust_score)
        .offset(lower)
        .limit(2)
    )
    around = [float(v) for v in session.scalars(stmt)]
    if len(around) == 1:
        return around[0]
    return around[0] + (position - lower) * (around[1] - around[0])


def prune_predictions(db: Database, before: dt.datetime, chunk: int = 5000) -> int:
    """Delete the predictions created before ``before``, a chunk per transaction.

    Small transactions keep locks short, so the batcher's inserts never wait long behind a prune.

    Args:
        db: The store.
        before: Rows created earlier than this are deleted.
        chunk: Rows per delete statement.

    Returns:
        How many rows were deleted.
    """
    deleted = 0
    while True:
        old = select(Prediction.id).where(Prediction.created_at < before).limit(chunk)
        with db.session() as session:
            # The ids are read once so that the feedback and its predictions go together.
            ids = list(session.scalars(old))
            delete_feedback_of(session, ids)
            result = session.execute(delete(Prediction).where(Prediction.id.in_(ids)))
            n = int(result.rowcount or 0)
        deleted += n
        if n < chunk:
            return deleted


def ping(db: Database) -> None:
    """One round trip to the store; raises the driver's error when it cannot be reached."""
    with db.session() as session:
        session.execute(select(1))


# API keys ---------------------------------------------------------------------------------------


def add_key(db: Database, row: dict[str, Any]) -> None:
    with db.session() as session:
        session.execute(ApiKey.__table__.insert(), [row])


def get_key(db: Database, key_id: str) -> dict[str, Any] | None:
    with db.session() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            return None
        columns = ("id", "name", "salt", "secret_hash", "scope", "created_at", "revoked_at")
        return {c: getattr(row, c) for c in columns}


def list_keys(db: Database) -> list[dict[str, Any]]:
    with db.session() as session:
        rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
        return [
            {
                "id": r.id,
                "name": r.name,
                "scope": r.scope,
                "created_at": r.created_at,
                "revoked_at": r.revoked_at,
            }
            for r in rows
        ]


def set_key_scope(db: Database, key_id: str, scope: str) -> bool:
    """Give an active key another scope; returns False when no active key has that id."""
    with db.session() as session:
        result = session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(scope=scope)
        )
        return bool(result.rowcount)


def count_active_keys(db: Database) -> int:
    with db.session() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
            )
            or 0
        )


def revoke_key(db: Database, key_id: str) -> bool:
    """Mark a key revoked; returns False when no active key has that id."""
    with db.session() as session:
        result = session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=dt.datetime.now(dt.UTC))
        )
        return bool(result.rowcount)
