"""A prediction's trust score may be null: a model served without a fitted detector has none.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter a column in place, so the table is copied (PostgreSQL
    # alters it directly).
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("trust_score", existing_type=sa.Float, nullable=True)


def downgrade() -> None:
    # Rows without a trust score cannot satisfy NOT NULL again: they are removed first.
    op.execute("DELETE FROM predictions WHERE trust_score IS NULL")
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("trust_score", existing_type=sa.Float, nullable=False)
