"""Bringing the request log's schema up to date: Alembic revisions, once, under a lock.

Every process that opens the log (the bots, `sonify worker`s, `sonify stats`) may be the
first to start after an upgrade, so each migrates on start-up — under a lock, so that two
starting together run each revision once: a PostgreSQL advisory lock held by the
migrating transaction, or a lock file beside a SQLite database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The schema of the hand-made migrations before Alembic (a `schema_version` table at 1).
LEGACY_REVISION = "0001"
# Any fixed 64-bit number names the lock among PostgreSQL advisory locks: "Sonify" in ASCII.
_ADVISORY_LOCK_KEY = 0x536F6E696679


def _alembic(connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(_alembic()).get_current_head()
    assert head is not None
    return head


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> str:
    config = _alembic(connection)
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables and "requests" in tables:
        if "schema_version" not in tables:
            raise RuntimeError("the request log has tables but no schema version; "
                               "refusing to guess")
        command.stamp(config, LEGACY_REVISION)  # made by the hand-made migrations, v1
    before = _current(connection)
    try:
        command.upgrade(config, "head")
    except CommandError as exc:
        if before is not None and "Can't locate revision" in str(exc):
            raise RuntimeError(f"the request log's schema ({before}) is newer than this code "
                               f"({head_revision()}); upgrade Sonify") from None
        raise
    after = _current(connection)
    if after != before:
        logger.info("request log schema: %s -> %s", before or "empty", after)
    return after or ""


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


async def migrate(db: AsyncEngine) -> str:
    """Create or upgrade the schema to the newest revision; returns that revision."""
    url = make_url(str(db.url))
    if url.get_backend_name() == "postgresql":
        async with db.begin() as conn:
            # Held until this transaction commits, with every revision inside it.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": _ADVISORY_LOCK_KEY})
            return await conn.run_sync(_upgrade)
    lock: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
    database = sqlite_file(str(db.url))
    if database is not None:
        lock = _file_lock(Path(f"{database}.migrate-lock"))
    async with lock, db.begin() as conn:
        return await conn.run_sync(_upgrade)

