"""The schema revision a request log is at (what the tests compare with the newest one)."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext

from core.storage.request_log import RequestLog


async def schema_revision(request_log: RequestLog) -> str | None:
    async with request_log.db.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision())
