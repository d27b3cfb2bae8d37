"""Moving pictures: what came in (photo, animation, video) and what went out, per request.

Revision ID: 0007
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("input_kind", sa.String(16)))
        batch.add_column(sa.Column("output_kind", sa.String(16)))
        batch.add_column(sa.Column("input_seconds", sa.Float))
        batch.add_column(sa.Column("sound_fit", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("sound_fit")
        batch.drop_column("input_seconds")
        batch.drop_column("output_kind")
        batch.drop_column("input_kind")
