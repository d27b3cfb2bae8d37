"""Retention: refusals folded into one row with a count; daily totals kept when old rows go.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("times", sa.Integer, nullable=False, server_default="1"))
    op.create_index("ix_clips_last_used_at", "clips", ["last_used_at"])
    op.create_table(
        "daily_totals",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("platform", sa.String(16), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("request_count", sa.Integer, nullable=False),
        sa.Column("cache_hits", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("daily_totals")
    op.drop_index("ix_clips_last_used_at", table_name="clips")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("times")
