"""The domain's values, checked: a request's status, delivery, platform and source kind (and
the daily totals' status and platform) can only be one of the values core/records.py names.

The values are written out here, as they were at this revision: a later change of one of
them is a migration of its own that drops and adds that check.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STATUSES = ("received", "queued", "running", "done", "failed", "rejected", "interrupted")
DELIVERIES = ("owed", "sending", "sent")
PLATFORMS = ("telegram", "discord", "web")
SOURCE_KINDS = ("photo", "document", "url", "attachment", "upload", "retake", "text")

CHECKS = {
    "requests": (("ck_requests_status", "status", STATUSES),
                 ("ck_requests_delivery", "delivery", DELIVERIES),
                 ("ck_requests_platform", "platform", PLATFORMS),
                 ("ck_requests_source_kind", "source_kind", SOURCE_KINDS)),
    "daily_totals": (("ck_daily_totals_status", "status", STATUSES),
                     ("ck_daily_totals_platform", "platform", PLATFORMS)),
}


def _allowed(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    # SQLite cannot add a check to a table: batch mode copies the table into a new one.
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for name, column, values in checks:
                batch.create_check_constraint(name, sa.text(_allowed(column, values)))


def downgrade() -> None:
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for name, _column, _values in checks:
                batch.drop_constraint(name, type_="check")
