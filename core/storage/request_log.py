"""The durable request log: one row per request, from its arrival until its answer is sent.

SQLAlchemy 2 async over SQLite (aiosqlite, WAL) by default, or PostgreSQL
(``postgresql+asyncpg://``) when several processes share it. The schema is managed by
Alembic (core/storage/migrate.py) and brought up to date when the log is opened.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Unpack

from sqlalchemy import Integer, case, event, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.errors import (
    ConfigError,
    DatabaseDamaged,
    DatabaseUnavailable,
    DuplicateRequest,
    StorageUnavailable,
)
from core.records import UNFINISHED, Delivery, RequestRecord, RequestStatus, RowChanges
from core.secrecy import SecretMasker, url_passwords
from core.storage.blobs import BlobStore, ClipIndex
from core.storage.chat_settings import SettingsStore
from core.storage.columns import row_values, without_secrets
from core.storage.cursors import CursorTable
from core.storage.migrate import migrate, sqlite_file
from core.storage.outage import DEFAULT_GRACE_S, Outage, watch_database
from core.storage.ownership import Lease, take_lease
from core.storage.retention import Retention
from core.storage.row_queue import RowQueue
from core.storage.share_links import ShareLinkTable
from core.storage.tables import requests

logger = logging.getLogger(__name__)

# Refusals of one kind from one user within this many seconds are one row (`record_refusal`).
FOLD_WINDOW_S = 60.0
# Answers not yet known to have arrived.
STILL_OWED = (Delivery.OWED, Delivery.SENDING)

# The package that provides each SQLAlchemy async driver.
DRIVER_PACKAGES = {"asyncpg": "asyncpg", "psycopg": "psycopg[binary]", "aiosqlite": "aiosqlite",
                   "aiomysql": "aiomysql", "asyncmy": "asyncmy"}


def missing_driver(drivername: str, module: str | None) -> str:
    """The one-line error for a database URL whose driver is not installed."""
    driver = drivername.partition("+")[2] or drivername
    package = DRIVER_PACKAGES.get(driver, module or driver)
    return (f"[storage] database_url: the {driver!r} database driver is not installed; "
            f"install it with: pip install '{package}'")


def cannot_open(url: str, exc: BaseException) -> str:
    """The one-line error for a request log that cannot be opened (server down, login
    refused, file not writable): where, with the password hidden, and the driver's reason."""
    where = make_url(url).render_as_string(hide_password=True)
    reason: BaseException = exc
    # SQLAlchemy wraps the driver's error (`orig`), and so does DatabaseUnavailable (cause).
    while isinstance(reason, DBAPIError | DatabaseUnavailable):
        inner = getattr(reason, "orig", None) or reason.__cause__
        if inner is None:
            break
        reason = inner
    text = " ".join(str(reason).split()) or type(reason).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    # The driver's own words may quote the URL or its password in any spelling.
    return SecretMasker(url_passwords(url)).mask(
        f"cannot open the request log at {where}: {text}")


# (platform, chat ids): the rows of one server's channels, or of one group.
ChatFilter = tuple[str, Sequence[str]]


def _in_chats(chats: ChatFilter | None) -> list[Any]:
    if chats is None:
        return []
    platform, chat_ids = chats
    return [requests.c.platform == platform, requests.c.chat_id.in_(list(chat_ids))]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    # NORMAL in WAL mode survives a process kill; only an OS crash may lose the last commits.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class RequestLog:
    """Async access to the request log (and the clip-cache index stored beside it).

    Its database being away shows as `DatabaseUnavailable`, a damaged file as
    `DatabaseDamaged` (core/storage/outage.py); `outage` waits the first out where a request
    is being settled (`outage_grace_s`).
    """

    def __init__(self, url: str, *, outage_grace_s: float = DEFAULT_GRACE_S) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        database = sqlite_file(url)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db: AsyncEngine = create_async_engine(url)
        except ModuleNotFoundError as exc:
            raise ConfigError(missing_driver(parsed.drivername, exc.name)) from None
        if self.is_sqlite:
            event.listen(self.db.sync_engine, "connect", _sqlite_pragmas)
        self.outage = Outage(outage_grace_s)
        self._lease: Lease | None = None
        watch_database(self.db, self.outage, str(database) if database is not None
                       else parsed.render_as_string(hide_password=True))
        self.clips = ClipIndex(self.db)
        self.blobs = BlobStore(self.db)
        self.row_queue = RowQueue(self.db)
        self.share_links = ShareLinkTable(self.db)
        self.cursors = CursorTable(self.db)
        self.retention = Retention(self.db)
        self.chat_settings = SettingsStore(self.db)

    @classmethod
    async def open(cls, url: str, *, outage_grace_s: float = DEFAULT_GRACE_S) -> RequestLog:
        """Connect and bring the schema up to date; StorageUnavailable (one line, password
        hidden) when the database cannot be reached or refuses us, DatabaseDamaged (one line:
        which file, what to do) when its file is damaged."""
        request_log = cls(url, outage_grace_s=outage_grace_s)
        try:
            await request_log.migrate()
        except DatabaseDamaged:
            await request_log.close()
            raise
        except (DBAPIError, OSError, DatabaseUnavailable) as exc:
            await request_log.close()
            # `from None`: the driver's traceback would print the URL's parts, password included.
            raise StorageUnavailable(cannot_open(url, exc)) from None
        except BaseException:
            await request_log.close()
            raise
        request_log.outage.armed = True
        return request_log

    async def close(self) -> None:
        await self.release_lease()
        await self.db.dispose()

    # ownership ------------------------------------------------------------------------------

    async def take_lease(self) -> None:
        """Become this log's one owner (the local backend); RequestLogInUse, naming the
        holder, when another process is (core/storage/ownership.py). Held until
        `release_lease` or `close`."""
        if self._lease is None:
            self._lease = await take_lease(self.url)

    async def release_lease(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    # schema ---------------------------------------------------------------------------------

    async def migrate(self) -> str:
        """Create or upgrade the schema (Alembic, under a lock); returns its revision."""
        return await migrate(self.db)

    # requests -------------------------------------------------------------------------------

    async def insert(self, record: RequestRecord) -> None:
        """Add a row; DuplicateRequest when its dedupe_key is already recorded."""
        values = row_values(record)
        try:
            async with self.db.begin() as conn:
                await conn.execute(insert(requests).values(**values))
        except IntegrityError:
            if record.dedupe_key is None:
                raise
            existing = await self.find_dedupe(record.dedupe_key)
            if existing is None:
                raise
            raise DuplicateRequest(existing.id, existing.created_at) from None
        except (DBAPIError, OSError) as exc:  # locked, read-only, unreachable: not recorded
            raise StorageUnavailable(f"the request log refused a write ({type(exc).__name__})"
                                     ) from None

    async def record_refusal(self, record: RequestRecord, *,
                             within_s: float = FOLD_WINDOW_S) -> tuple[str, int]:
        """Log a refused request; returns (its row's id, how many refusals that row holds).

        A refusal with the same reason for the same user as one logged in the last `within_s`
        seconds is folded into that row (its `times` counts up, `finished_at` moves on)
        instead of making a row of its own: a client hammering the door adds one row a
        minute, not one per request. Raises DuplicateRequest for a dedupe key recorded
        before; a folded row keeps the newest key (a redelivery is most likely the newest).
        """
        values = row_values(record)
        same = (requests.c.platform == record.platform) & (requests.c.user_id == record.user_id)
        recent = select(requests.c.id, requests.c.times).where(
            same, requests.c.status == RequestStatus.REJECTED, requests.c.reason == record.reason,
            requests.c.delivery.is_(None),
            requests.c.created_at.between(record.created_at - within_s, record.created_at),
        ).order_by(requests.c.created_at.desc()).limit(1)
        try:
            async with self.db.begin() as conn:
                if record.dedupe_key is not None:
                    known = (await conn.execute(select(requests.c.id, requests.c.created_at)
                                                .where(requests.c.dedupe_key == record.dedupe_key))
                             ).first()
                    if known is not None:
                        raise DuplicateRequest(str(known[0]), float(known[1]))
                folded = (await conn.execute(recent)).first()
                if folded is None:
                    await conn.execute(insert(requests).values(**values))
                    return record.id, 1
                changes: dict[str, Any] = {"times": requests.c.times + 1,
                                           "finished_at": record.created_at}
                if record.dedupe_key is not None:
                    changes["dedupe_key"] = record.dedupe_key
                await conn.execute(update(requests).where(requests.c.id == folded[0])
                                   .values(**changes))
                return str(folded[0]), int(folded[1]) + 1
        except IntegrityError:  # the same dedupe key written meanwhile by another process
            existing = await self.find_dedupe(record.dedupe_key) if record.dedupe_key else None
            if existing is None:
                raise
            raise DuplicateRequest(existing.id, existing.created_at) from None
        except (DBAPIError, OSError) as exc:
            raise StorageUnavailable(f"the request log refused a write ({type(exc).__name__})"
                                     ) from None

    async def find_dedupe(self, dedupe_key: str) -> RequestRecord | None:
        """The row recorded for a platform's update or message, if any."""
        query = select(requests).where(requests.c.dedupe_key == dedupe_key)
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        return RequestRecord.from_row(row) if row else None

    async def merge_reply_context(self, request_id: str, values: dict[str, Any]) -> None:
        """Add keys to a row's reply context (e.g. the id of the status message shown)."""
        async with self.db.begin() as conn:
            current = (await conn.execute(select(requests.c.reply_context)
                                          .where(requests.c.id == request_id))).scalar()
            merged = {**(current or {}), **without_secrets(values)}
            await conn.execute(update(requests).where(requests.c.id == request_id)
                               .values(reply_context=merged))

    async def set_delivery(self, request_id: str, state: Delivery) -> None:
        """Record how far an owed answer got ("sending", "sent"); never back from "sent".

        Rows that owe nothing (refusals at the door, web jobs) are left alone.
        """
        async with self.db.begin() as conn:
            await conn.execute(update(requests).where(
                requests.c.id == request_id, requests.c.delivery.in_(STILL_OWED))
                .values(delivery=state))

    async def unanswered(self) -> list[RequestRecord]:
        """Finished rows whose answer is owed or was being sent, oldest first."""
        query = (select(requests).where(requests.c.status.not_in(UNFINISHED),
                                        requests.c.delivery.in_(STILL_OWED))
                 .order_by(requests.c.created_at))
        async with self.db.connect() as conn:
            return [RequestRecord.from_row(r) for r in await conn.execute(query)]

    async def update(self, request_id: str, **changes: Unpack[RowChanges]) -> None:
        """Change some columns of one row."""
        async with self.db.begin() as conn:
            await conn.execute(update(requests).where(requests.c.id == request_id)
                               .values(**changes))

    async def mark_started(self, request_ids: Sequence[str], started_at: float,
                           batch_size: int) -> None:
        """Queued rows become running; a request that joined after the start waited 0 s."""
        if not request_ids:
            return
        # Only queued rows: a late update must never turn a finished row back into running.
        wait = case((requests.c.created_at < started_at, started_at - requests.c.created_at),
                    else_=0.0)
        async with self.db.begin() as conn:
            await conn.execute(
                update(requests).where(requests.c.id.in_(list(request_ids)),
                                       requests.c.status == RequestStatus.QUEUED)
                .values(status=RequestStatus.RUNNING, started_at=started_at,
                        batch_size=batch_size,
                        queue_wait_s=wait))

    async def get(self, request_id: str) -> RequestRecord | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(requests).where(requests.c.id == request_id))).first()
        return RequestRecord.from_row(row) if row else None

    async def unfinished(self) -> list[RequestRecord]:
        """Rows left received, queued or running (a crash, a bounded stop), oldest first."""
        query = (select(requests).where(requests.c.status.in_(UNFINISHED))
                 .order_by(requests.c.created_at))
        async with self.db.connect() as conn:
            return [RequestRecord.from_row(r) for r in (await conn.execute(query))]

    async def user_window(self, platform: str, user_id: str,
                          since: float) -> tuple[int, float | None]:
        """(count, oldest created_at) of a user's accepted requests created after `since`."""
        query = (select(func.count(), func.min(requests.c.created_at))
                 .where(requests.c.platform == platform, requests.c.user_id == user_id,
                        requests.c.created_at > since, requests.c.status != RequestStatus.REJECTED))
        async with self.db.connect() as conn:
            count, oldest = (await conn.execute(query)).one()
        return int(count), oldest

    async def rows_since(self, since: float, columns: Sequence[str] | None = None, *,
                         chats: ChatFilter | None = None) -> list[Any]:
        """Rows created after `since` (only `columns`, if given; only `chats`' rows, if
        given), for statistics."""
        cols = [requests.c[c] for c in columns] if columns else [requests]
        query = select(*cols).where(requests.c.created_at > since, *_in_chats(chats))
        async with self.db.connect() as conn:
            return list(await conn.execute(query))

    async def counts(self, since: float | None = None, *,
                     chats: ChatFilter | None = None) -> list[tuple[str, str, int]]:
        """(platform, status, requests) groups of the rows (a folded refusal counts its
        `times`), optionally only rows created after `since` and only `chats`' rows."""
        query = select(requests.c.platform, requests.c.status,
                       func.sum(requests.c.times)).where(*_in_chats(chats)).group_by(
                           requests.c.platform, requests.c.status)
        if since is not None:
            query = query.where(requests.c.created_at > since)
        async with self.db.connect() as conn:
            return [(p, s, int(n)) for p, s, n in await conn.execute(query)]

    async def cache_hit_counts(self, *, chats: ChatFilter | None = None) -> tuple[int, int]:
        """(cache hits, all done) over the whole log (or `chats`' rows)."""
        query = select(func.count(), func.sum(requests.c.cache_hit.cast(Integer))).where(
            requests.c.status == RequestStatus.DONE, *_in_chats(chats))
        async with self.db.connect() as conn:
            done, hits = (await conn.execute(query)).one()
        return int(hits or 0), int(done or 0)
