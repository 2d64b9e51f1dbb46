"""Feedback on predictions, and the scores recalibration needs.

``predictions`` gains the fused score before the final calibration and each view's raw score
(``scores``, JSON), and the current feedback (``feedback_correct``, ``feedback_label``,
``feedback_at``), which the flag-quality statistics aggregate without a join. Every feedback
post is also kept in ``prediction_feedback``, so a replaced answer is never lost.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("scores", sa.JSON, nullable=True))
        batch.add_column(sa.Column("feedback_correct", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("feedback_label", sa.Integer, nullable=True))
        batch.add_column(sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True))
    # Only labelled rows are indexed: the flag-quality statistics read nothing else, and most
    # traffic never gets feedback.
    labelled = sa.text("feedback_correct IS NOT NULL")
    op.create_index(
        "ix_predictions_labelled_model_created",
        "predictions",
        ["model", "created_at"],
        sqlite_where=labelled,
        postgresql_where=labelled,
    )
    op.create_table(
        "prediction_feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "prediction_id",
            sa.String(32),
            sa.ForeignKey("predictions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("correct", sa.Boolean, nullable=False),
        sa.Column("label", sa.Integer, nullable=True),
        sa.Column("api_key_id", sa.String(32), nullable=True),
    )
    op.create_index(
        "ix_prediction_feedback_prediction_id", "prediction_feedback", ["prediction_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_prediction_feedback_prediction_id", "prediction_feedback")
    op.drop_table("prediction_feedback")
    op.drop_index("ix_predictions_labelled_model_created", "predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("feedback_at")
        batch.drop_column("feedback_label")
        batch.drop_column("feedback_correct")
        batch.drop_column("scores")
