"""The durable request log: one row per request, written on acceptance, updated as it moves.

SQLAlchemy 2 async over SQLite (aiosqlite, WAL) by default; any async URL (e.g.
``postgresql+asyncpg://``) works unchanged. The schema is versioned: a fresh
database gets the current tables and is stamped with the latest version; an older
one runs the missing steps of `MIGRATIONS` in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.options import GenerationOptions

logger = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "rejected", "interrupted")
UNFINISHED = ("queued", "running")

metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

requests = Table(
    "requests", metadata,
    Column("id", String(24), primary_key=True),
    Column("platform", String(16), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("chat_id", String(64), nullable=False),
    Column("source_kind", String(16), nullable=False),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("image_sha256", String(64)),
    Column("caption", Text),
    Column("prompt", Text),
    Column("options", JSON),
    Column("seed", Integer),
    Column("lang", String(8), nullable=False, default="en"),
    Column("reply_context", JSON),
    Column("cache_key", String(64)),
    Column("status", String(16), nullable=False),
    Column("reason", String(32)),
    Column("queue_wait_s", Float),
    Column("caption_s", Float),
    Column("sound_s", Float),
    Column("encode_s", Float),
    Column("total_s", Float),
    Column("duration_s", Float),
    Column("cache_hit", Boolean, nullable=False, default=False),
    Column("batch_size", Integer),
    Column("files", JSON),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Index("ix_requests_user", "platform", "user_id", "created_at"),
    Index("ix_requests_status", "status"),
    Index("ix_requests_created", "created_at"),
)

# Index of the clip cache (files live under <data_dir>/cache; see core/cache.py).
clips = Table(
    "clips", metadata,
    Column("clip_id", String(24), primary_key=True),
    Column("key", String(64), index=True),
    Column("caption", Text, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("files", JSON, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=False),
)

# Ordered steps from version N to N+1 (index 0 upgrades 1 -> 2, ...). Each step must
# work on a database at the previous version; fresh databases skip them all.
MIGRATIONS: list[Callable[[Connection], None]] = []
BASE_VERSION = 1


def latest_version() -> int:
    return BASE_VERSION + len(MIGRATIONS)


@dataclass
class RequestRecord:
    """One row of the request log."""

    id: str
    platform: str
    user_id: str
    chat_id: str
    source_kind: str
    status: str
    created_at: float
    is_admin: bool = False
    image_sha256: str | None = None
    caption: str | None = None
    prompt: str | None = None
    options: dict[str, Any] | None = None
    seed: int | None = None
    lang: str = "en"
    reply_context: dict[str, Any] = field(default_factory=dict)
    cache_key: str | None = None
    reason: str | None = None
    queue_wait_s: float | None = None
    caption_s: float | None = None
    sound_s: float | None = None
    encode_s: float | None = None
    total_s: float | None = None
    duration_s: float | None = None
    cache_hit: bool = False
    batch_size: int | None = None
    files: dict[str, str] | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def generation_options(self) -> GenerationOptions | None:
        return GenerationOptions.from_dict(self.options) if self.options else None

    @classmethod
    def from_row(cls, row: Any) -> RequestRecord:
        data = dict(row._mapping)
        data["reply_context"] = data.get("reply_context") or {}
        return cls(**data)


_RECORD_FIELDS = {f.name for f in fields(RequestRecord)}
_SECRET_WORDS = ("token", "secret", "password", "authorization")


def without_secrets(context: dict[str, Any]) -> dict[str, Any]:
    """A reply context minus credential-like keys: rows outlive tokens and get copied."""
    kept = {}
    for name, value in context.items():
        if any(word in name.lower() for word in _SECRET_WORDS):
            logger.warning("reply_context key %r looks like a credential; not stored", name)
        else:
            kept[name] = value
    return kept


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    # NORMAL in WAL mode survives a process kill; only an OS crash may lose the last commits.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class RequestLog:
    """Async access to the request log (and the clip-cache index stored beside it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(url)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    @classmethod
    async def open(cls, url: str) -> RequestLog:
        """Connect and bring the schema up to date."""
        log = cls(url)
        await log.migrate()
        return log

    async def close(self) -> None:
        await self.engine.dispose()

    # schema ---------------------------------------------------------------------------------

    async def migrate(self) -> int:
        """Create or upgrade the schema; return the version it is at now."""
        async with self.engine.begin() as conn:
            return await conn.run_sync(_migrate_sync)

    async def schema_version(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.max(schema_version.c.version)))).scalar()
                       or 0)

    # requests -------------------------------------------------------------------------------

    async def insert(self, record: RequestRecord) -> None:
        values = {f: getattr(record, f) for f in _RECORD_FIELDS}
        values["reply_context"] = without_secrets(record.reply_context or {})
        async with self.engine.begin() as conn:
            await conn.execute(insert(requests).values(**values))

    async def update(self, request_id: str, **values: Any) -> None:
        await self.update_many([request_id], **values)

    async def update_many(self, request_ids: Sequence[str], **values: Any) -> None:
        """Set the same columns on several rows (values may be SQL expressions)."""
        unknown = set(values) - _RECORD_FIELDS
        if unknown:
            raise ValueError(f"unknown request columns: {sorted(unknown)}")
        if not request_ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(update(requests).where(requests.c.id.in_(list(request_ids)))
                               .values(**values))

    async def mark_started(self, request_ids: Sequence[str], started_at: float,
                           batch_size: int) -> None:
        """Queued rows become running; a request that joined after the start waited 0 s."""
        if not request_ids:
            return
        # Only queued rows: a late update must never turn a finished row back into running.
        wait = case((requests.c.created_at < started_at, started_at - requests.c.created_at),
                    else_=0.0)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(requests).where(requests.c.id.in_(list(request_ids)),
                                       requests.c.status == "queued")
                .values(status="running", started_at=started_at, batch_size=batch_size,
                        queue_wait_s=wait))

    async def get(self, request_id: str) -> RequestRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(requests).where(requests.c.id == request_id))).first()
        return RequestRecord.from_row(row) if row else None

    async def unfinished(self) -> list[RequestRecord]:
        """Rows left queued or running (by a crash or a bounded shutdown), oldest first."""
        query = (select(requests).where(requests.c.status.in_(UNFINISHED))
                 .order_by(requests.c.created_at))
        async with self.engine.connect() as conn:
            return [RequestRecord.from_row(r) for r in (await conn.execute(query))]

    async def user_window(self, platform: str, user_id: str,
                          since: float) -> tuple[int, float | None]:
        """(count, oldest created_at) of a user's accepted requests created after `since`."""
        query = (select(func.count(), func.min(requests.c.created_at))
                 .where(requests.c.platform == platform, requests.c.user_id == user_id,
                        requests.c.created_at > since, requests.c.status != "rejected"))
        async with self.engine.connect() as conn:
            count, oldest = (await conn.execute(query)).one()
        return int(count), oldest

    async def rows_since(self, since: float, columns: Sequence[str] | None = None) -> list[Any]:
        """Rows created after `since` (only `columns`, if given), for statistics."""
        cols = [requests.c[c] for c in columns] if columns else [requests]
        query = select(*cols).where(requests.c.created_at > since)
        async with self.engine.connect() as conn:
            return list(await conn.execute(query))

    async def counts(self, since: float | None = None) -> list[tuple[str, str, int]]:
        """(platform, status, count) groups, optionally only rows created after `since`."""
        query = select(requests.c.platform, requests.c.status, func.count()).group_by(
            requests.c.platform, requests.c.status)
        if since is not None:
            query = query.where(requests.c.created_at > since)
        async with self.engine.connect() as conn:
            return [(p, s, int(n)) for p, s, n in await conn.execute(query)]

    async def cache_hit_counts(self) -> tuple[int, int]:
        """(cache hits, all done) over the whole log."""
        query = select(func.count(), func.sum(requests.c.cache_hit.cast(Integer))).where(
            requests.c.status == "done")
        async with self.engine.connect() as conn:
            done, hits = (await conn.execute(query)).one()
        return int(hits or 0), int(done or 0)

    # clip cache index -----------------------------------------------------------------------

    async def clip_put(self, values: dict[str, Any]) -> None:
        """Add a clip; a keyed clip replaces the key of any older clip with that key."""
        async with self.engine.begin() as conn:
            if values.get("key"):
                await conn.execute(update(clips).where(clips.c.key == values["key"])
                                   .values(key=None))
            await conn.execute(insert(clips).values(**values))

    async def clip_lookup(self, key: str) -> dict[str, Any] | None:
        query = select(clips).where(clips.c.key == key).order_by(clips.c.created_at.desc())
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return dict(row._mapping) if row else None

    async def clip_touch(self, clip_id: str, when: float | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(clips).where(clips.c.clip_id == clip_id)
                               .values(last_used_at=time.time() if when is None else when))

    async def clip_total_bytes(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.sum(clips.c.size_bytes)))).scalar() or 0)

    async def clip_oldest(self, used_before: float, limit: int = 100) -> list[dict[str, Any]]:
        """Least recently used clips not used since `used_before`, oldest first."""
        query = (select(clips).where(clips.c.last_used_at < used_before)
                 .order_by(clips.c.last_used_at).limit(limit))
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def clip_all_files(self) -> list[dict[str, str]]:
        async with self.engine.connect() as conn:
            return [r[0] for r in await conn.execute(select(clips.c.files))]

    async def clip_delete(self, clip_ids: Sequence[str]) -> None:
        if not clip_ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(clips.delete().where(clips.c.clip_id.in_(list(clip_ids))))


def _migrate_sync(conn: Connection) -> int:
    existing = set(inspect(conn).get_table_names())
    if "schema_version" not in existing:
        if "requests" in existing:
            raise RuntimeError("request log has tables but no schema_version; refusing to guess")
        metadata.create_all(conn)
        conn.execute(insert(schema_version).values(version=latest_version(),
                                                   applied_at=time.time()))
        logger.info("created request log schema v%d", latest_version())
        return latest_version()
    current = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
    if current > latest_version():
        raise RuntimeError(f"request log schema v{current} is newer than this code "
                           f"(v{latest_version()}); upgrade Sonify")
    for version in range(current + 1, latest_version() + 1):
        MIGRATIONS[version - BASE_VERSION - 1](conn)
        conn.execute(insert(schema_version).values(version=version, applied_at=time.time()))
        logger.info("migrated request log schema to v%d", version)
    return latest_version()
