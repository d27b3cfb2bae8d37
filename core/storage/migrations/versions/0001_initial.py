"""The first schema: requests and the clip-cache index.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(24), primary_key=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("chat_id", sa.String(64), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("image_sha256", sa.String(64)),
        sa.Column("caption", sa.Text),
        sa.Column("prompt", sa.Text),
        sa.Column("options", sa.JSON),
        sa.Column("seed", sa.Integer),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("reply_context", sa.JSON),
        sa.Column("cache_key", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32)),
        sa.Column("queue_wait_s", sa.Float),
        sa.Column("caption_s", sa.Float),
        sa.Column("sound_s", sa.Float),
        sa.Column("encode_s", sa.Float),
        sa.Column("total_s", sa.Float),
        sa.Column("duration_s", sa.Float),
        sa.Column("cache_hit", sa.Boolean, nullable=False),
        sa.Column("batch_size", sa.Integer),
        sa.Column("files", sa.JSON),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index("ix_requests_user", "requests", ["platform", "user_id", "created_at"])
    op.create_index("ix_requests_status", "requests", ["status"])
    op.create_index("ix_requests_created", "requests", ["created_at"])
    op.create_table(
        "clips",
        sa.Column("clip_id", sa.String(24), primary_key=True),
        sa.Column("key", sa.String(64)),
        sa.Column("caption", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=False),
    )
    op.create_index("ix_clips_key", "clips", ["key"])


def downgrade() -> None:
    op.drop_table("clips")
    op.drop_table("requests")
