"""Predictions and API keys.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("class_name", sa.String(128), nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("trust_score", sa.Float, nullable=False),
        sa.Column("flagged", sa.Boolean, nullable=False),
        sa.Column("features", sa.JSON, nullable=True),
        sa.Column("api_key_id", sa.String(32), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_predictions_key_model_id", "predictions", ["api_key_id", "model", "id"])
    op.create_index("ix_predictions_model_id", "predictions", ["model", "id"])
    op.create_index("ix_predictions_model_flagged_id", "predictions", ["model", "flagged", "id"])
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_predictions_created_at", "predictions")
    op.drop_index("ix_predictions_model_flagged_id", "predictions")
    op.drop_index("ix_predictions_model_id", "predictions")
    op.drop_index("ix_predictions_key_model_id", "predictions")
    op.drop_table("predictions")
