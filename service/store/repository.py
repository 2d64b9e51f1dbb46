"""Reads and writes of the result store; every function takes the :class:`Database` first.

Ownership is enforced here, not in handlers: ``owner`` is the API key id of the caller, or
``None`` in open mode (no keys configured), where every prediction is visible.
"""

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Select, case, func, select, update

from service.errors import InvalidCursor, PredictionNotFound
from service.store.database import Database
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


def prediction_stats(
    db: Database,
    owner: str | None,
    *,
    model: str | None = None,
    since: dt.datetime | None = None,
    max_rows: int = 100_000,
) -> dict[str, Any]:
    """Counts, flag rate and trust-score quantiles of the predictions since ``since``.

    Args:
        db: The store.
        owner: Caller's key id, or None in open mode.
        model: Only this model.
        since: Window start (None: all time).
        max_rows: Quantiles are computed from at most this many newest rows.

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

    counts = scoped(select(func.count(), func.sum(case((Prediction.flagged, 1), else_=0))))
    with db.session() as session:
        count, n_flagged = session.execute(counts).one()
        n_flagged = n_flagged or 0
        scores = session.scalars(
            scoped(select(Prediction.trust_score)).order_by(Prediction.id.desc()).limit(max_rows)
        ).all()
    quantiles = None
    if scores:
        qs = np.quantile(np.asarray(scores, dtype=np.float64), [0.05, 0.25, 0.5, 0.75, 0.95])
        quantiles = dict(zip(("p05", "p25", "p50", "p75", "p95"), map(float, qs), strict=True))
    return {
        "count": int(count),
        "flagged": int(n_flagged),
        "flag_rate": (int(n_flagged) / int(count)) if count else None,
        "trust_quantiles": quantiles,
    }


# API keys ---------------------------------------------------------------------------------------


def add_key(db: Database, row: dict[str, Any]) -> None:
    with db.session() as session:
        session.execute(ApiKey.__table__.insert(), [row])


def get_key(db: Database, key_id: str) -> dict[str, Any] | None:
    with db.session() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            return None
        columns = ("id", "name", "salt", "secret_hash", "created_at", "revoked_at")
        return {c: getattr(row, c) for c in columns}


def list_keys(db: Database) -> list[dict[str, Any]]:
    with db.session() as session:
        rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
        return [
            {"id": r.id, "name": r.name, "created_at": r.created_at, "revoked_at": r.revoked_at}
            for r in rows
        ]


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
