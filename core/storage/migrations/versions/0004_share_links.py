"""Share links: a result made public under an unguessable link its owner can revoke.

Only the sha256 of a link's token is stored: whoever reads the database cannot open the
links. A revoked link's row is deleted.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shares",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(24), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("preview", sa.LargeBinary),
    )
    op.create_index("ix_shares_request_id", "shares", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_shares_request_id", table_name="shares")
    op.drop_table("shares")
