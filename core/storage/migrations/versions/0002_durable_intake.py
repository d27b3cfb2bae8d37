"""Durable intake: a request is a row from the moment it arrives until its answer is sent.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("source", sa.JSON))
        batch.add_column(sa.Column("dedupe_key", sa.String(160)))
        batch.add_column(sa.Column("delivery", sa.String(16)))
        batch.add_column(sa.Column("score", sa.Float))
        batch.add_column(sa.Column("worker", sa.String(64)))
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("user_name", sa.String(64)))
        batch.create_index("ix_requests_dedupe", ["dedupe_key"], unique=True)
        batch.create_index("ix_requests_delivery", ["delivery"])
    op.create_table(
        "cursors",
        sa.Column("platform", sa.String(16), primary_key=True),
        sa.Column("channel_id", sa.String(32), primary_key=True),
        sa.Column("last_id", sa.String(32), nullable=False),
        sa.Column("is_private", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    # The version table of the hand-made migrations before Alembic, if any.
    op.execute("DROP TABLE IF EXISTS schema_version")


def downgrade() -> None:
    op.drop_table("cursors")
    with op.batch_alter_table("requests") as batch:
        batch.drop_index("ix_requests_delivery")
        batch.drop_index("ix_requests_dedupe")
        for name in ("user_name", "attempts", "worker", "score", "delivery", "dedupe_key",
                     "source"):
            batch.drop_column(name)
