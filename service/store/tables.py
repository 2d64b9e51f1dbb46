"""The result store's tables (SQLAlchemy 2 declarative); ``migrations/`` builds them."""

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on every backend.

    SQLite has no time zones and returns naive values; storing naive UTC there and attaching UTC
    on the way out makes ``since``/``until`` comparisons mean the same on SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class Prediction(Base):
    """One image's prediction; ids sort by creation time, which keyset pagination relies on."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)
    model_version: Mapped[str] = mapped_column(String(64), nullable=False)
    label: Mapped[int] = mapped_column(Integer, nullable=False)
    class_name: Mapped[str] = mapped_column(String(128), nullable=False)
    probabilities: Mapped[list[float]] = mapped_column(JSON, nullable=False)
    # Null for a model served without a fitted detector (migration 0002).
    trust_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    flagged: Mapped[bool] = mapped_column(Boolean, nullable=False)
    features: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    request_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # What recalibration needs (migration 0004): ``{"fused": the fused statistic before the
    # final calibration, "views": {view: raw score}}``; null without a detector. A JSON column
    # rather than a child table: the handful of floats is always written and read together with
    # its prediction, never queried one by one, and the set of views differs between detectors.
    scores: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The latest feedback, copied from ``prediction_feedback`` so that the flag-quality
    # statistics aggregate one table. Null: no feedback yet.
    feedback_correct: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    feedback_label: Mapped[int | None] = mapped_column(Integer, nullable=True)
    feedback_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    # The list endpoint filters by key (always, when keys are on), model, flag and time, newest
    # first by id: each index ends in id so the keyset scan reads it in order.
    __table_args__ = (
        Index("ix_predictions_key_model_id", "api_key_id", "model", "id"),
        Index("ix_predictions_model_id", "model", "id"),
        Index("ix_predictions_model_flagged_id", "model", "flagged", "id"),
        Index("ix_predictions_created_at", "created_at"),
        Index(
            "ix_predictions_labelled_model_created",
            "model",
            "created_at",
            sqlite_where=text("feedback_correct IS NOT NULL"),
            postgresql_where=text("feedback_correct IS NOT NULL"),
        ),
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "model": self.model,
            "model_version": self.model_version,
            "label": self.label,
            "class_name": self.class_name,
            "probabilities": self.probabilities,
            "trust_score": self.trust_score,
            "flagged": self.flagged,
            "features": self.features,
            "api_key_id": self.api_key_id,
            "request_id": self.request_id,
            "scores": self.scores,
            "feedback": self.feedback(),
        }

    def feedback(self) -> dict[str, Any] | None:
        """The latest feedback (``correct``, ``label``, ``at``), or None when there is none."""
        if self.feedback_correct is None:
            return None
        return {
            "correct": self.feedback_correct,
            "label": self.feedback_label,
            "at": self.feedback_at,
        }


class ApiKey(Base):
    """An API key: only a salted HMAC of its secret is kept, never the secret, and its scope."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    salt: Mapped[str] = mapped_column(String(64), nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    # read, predict or admin (service/access.py); keys made before migration 0003 are predict.
    scope: Mapped[str] = mapped_column(String(16), nullable=False, server_default="predict")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class PredictionFeedback(Base):
    """One feedback post on a prediction; the newest (highest id) is the prediction's current one.

    Posts are kept, not overwritten, so a correction never erases what was said before.
    """

    __tablename__ = "prediction_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("predictions.id", ondelete="CASCADE"), nullable=False
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    correct: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # The true class; null when only ``correct: false`` was said.
    label: Mapped[int | None] = mapped_column(Integer, nullable=True)
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (Index("ix_prediction_feedback_prediction_id", "prediction_id", "id"),)
