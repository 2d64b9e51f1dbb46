"""API keys get a scope: read, predict or admin. Every existing key becomes predict.

Before this revision every key could classify, read back its own predictions and load or unload
models. ``predict`` keeps the first two; repository control, off by default from this release
on, needs an ``admin`` key, which an operator grants on purpose (``gga keys create NAME --scope
admin`` or ``gga keys scope ID admin``) rather than every client inheriting it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The server default fills the existing rows, and keeps working for the previous release's
    # code while it drains (it inserts keys without a scope).
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("scope", sa.String(16), nullable=False, server_default="predict")
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scope")
