"""Moving pictures: what came in (photo, animation, video) and what went out, per request,
and Telegram's moving source kinds (animation, video, video_note), each checked as 0006 checks
the other values.

The values are written out here, as they were at this revision (see 0006).

Revision ID: 0009
Revises: 0008 (chat settings, which came first on main; this revision was 0007 on its branch)
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OLD_SOURCE_KINDS = ("photo", "document", "url", "attachment", "upload", "retake", "text")
SOURCE_KINDS = (*OLD_SOURCE_KINDS, "animation", "video", "video_note")
INPUT_KINDS = ("photo", "animation", "video")
OUTPUT_KINDS = ("audio", "video", "audio_only")
SOUND_FITS = ("whole", "looped")

NEW_CHECKS = (("ck_requests_input_kind", "input_kind", INPUT_KINDS),
              ("ck_requests_output_kind", "output_kind", OUTPUT_KINDS),
              ("ck_requests_sound_fit", "sound_fit", SOUND_FITS))


def _allowed(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    # SQLite cannot change a table's checks: batch mode copies the table into a new one.
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("input_kind", sa.String(16)))
        batch.add_column(sa.Column("output_kind", sa.String(16)))
        batch.add_column(sa.Column("input_seconds", sa.Float))
        batch.add_column(sa.Column("sound_fit", sa.String(16)))
        batch.drop_constraint("ck_requests_source_kind", type_="check")
        batch.create_check_constraint("ck_requests_source_kind",
                                      sa.text(_allowed("source_kind", SOURCE_KINDS)))
        for name, column, values in NEW_CHECKS:
            batch.create_check_constraint(name, sa.text(_allowed(column, values)))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        for name, _column, _values in NEW_CHECKS:
            batch.drop_constraint(name, type_="check")
        batch.drop_constraint("ck_requests_source_kind", type_="check")
        batch.create_check_constraint("ck_requests_source_kind",
                                      sa.text(_allowed("source_kind", OLD_SOURCE_KINDS)))
        batch.drop_column("sound_fit")
        batch.drop_column("input_seconds")
        batch.drop_column("output_kind")
        batch.drop_column("input_kind")
