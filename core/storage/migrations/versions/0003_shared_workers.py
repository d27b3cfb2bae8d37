"""Several processes over one log: pictures, clips and service keys kept in the database,
fair rounds.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("fair_round", sa.Integer))
        batch.add_column(sa.Column("rider_of", sa.String(24)))
        batch.create_index("ix_requests_rider_of", ["rider_of"])
        batch.create_index("ix_requests_cache_key", ["cache_key"])
    op.create_table(
        "pictures",
        sa.Column("request_id", sa.String(24), primary_key=True),
        sa.Column("png", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "clip_files",
        sa.Column("clip_id", sa.String(24), primary_key=True),
        sa.Column("fmt", sa.String(8), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "service_keys",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_keys")
    op.drop_table("clip_files")
    op.drop_table("pictures")
    with op.batch_alter_table("requests") as batch:
        batch.drop_index("ix_requests_cache_key")
        batch.drop_index("ix_requests_rider_of")
        batch.drop_column("rider_of")
        batch.drop_column("fair_round")
