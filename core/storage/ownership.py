"""One owner per local request log: the lease a `sonify run` with the local backend holds.

The local backend counts limits in memory and, at start, takes up every unfinished row as
its own — so two processes on one log would render and answer the same jobs twice and
count each user's limits apart. The first to start holds a lease; a second stops at once,
naming the holder. Several processes on one log is what the redis backend is for.

- SQLite: an exclusive `flock` on a file beside the database (`<database>.owner`), which
  also says who holds it (pid, host, since when). The kernel drops the lock when the
  holder's process ends in any way, SIGKILL included, so the next start takes over at
  once; nothing has to expire.
- PostgreSQL: a session-level advisory lock on a connection of its own, named by the
  connection's `application_name` (pid and host), which PostgreSQL shows to the next one
  that asks. A killed holder's lock goes when its connection does. If the database restarts
  the lock is gone with it; it is taken again as soon as the database is back.
- In-memory SQLite (tests) and other databases: no lease.

Only the local backend's engine takes the lease; readers (`sonify stats`) and the redis
backend's processes do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from core.errors import RequestLogInUse
from core.storage.migrate import sqlite_file
from core.storage.outage import is_unavailable

logger = logging.getLogger(__name__)

# Names the lease among PostgreSQL advisory locks: "Sonify" in ASCII, then 2 (1 is the
# admission lock of core/storage/row_queue.py).
_LEASE_KEY = 0x536F6E69667902
HOLD_CHECK_S = 5.0  # how often a PostgreSQL lease checks its connection is still there
SEVERAL = ('for several processes on one request log, use [jobs] backend = "redis" with '
           'PostgreSQL (README, "More than one GPU")')


def holder_description() -> str:
    """Who this process is, as the next one to ask is told."""
    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {os.getpid()} on {socket.gethostname()}, since {since}"


class Lease(Protocol):
    """A held lease; `release` lets the next process take it."""

    async def release(self) -> None: ...


class NoLease:
    """Nothing to hold (an in-memory database, or a database without such locks)."""

    async def release(self) -> None:
        return None


class FileLease:
    """An exclusive `flock` on `<database>.owner`, holding the holder's description."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @staticmethod
    def path_of(database: Path) -> Path:
        return database.with_name(database.name + ".owner")

    @classmethod
    def take(cls, database: Path) -> FileLease:
        path = cls.path_of(database)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_or_refuse(fd, database)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"sonify run: {holder_description()}\n".encode(), 0)
        return cls(path, fd)

    async def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = -1


def _lock_or_refuse(fd: int, database: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd) or "its pid and host unknown"
        raise RequestLogInUse(f"the request log {database} is in use by another sonify "
                              f"process ({holder}); stop it first, or {SEVERAL}") from None


def check_free(url: str) -> None:
    """RequestLogInUse at once if another process holds the lease on this SQLite log —
    without creating anything (a start that stops for another reason leaves no files)."""
    database = sqlite_file(url)
    if database is None:
        return
    try:
        fd = os.open(FileLease.path_of(database), os.O_RDWR)
    except OSError:
        return  # no lease file: nobody has held it (or it cannot be read: the take says so)
    try:
        _lock_or_refuse(fd, database)
    finally:
        os.close(fd)  # and with it the lock, if this look took it


def _read_holder(fd: int) -> str:
    try:
        raw = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return raw.removeprefix("sonify run: ").splitlines()[0] if raw else ""


class AdvisoryLease:
    """A PostgreSQL session-level advisory lock on a connection of its own."""

    def __init__(self, url: str) -> None:
        # A pool of none: the lease's connection is made and closed here, never shared; and
        # no transaction is ever left open on it (the lock is the session's, not one's).
        self.db: AsyncEngine = create_async_engine(url, poolclass=NullPool,
                                                       isolation_level="AUTOCOMMIT")
        self.where = make_url(url).render_as_string(hide_password=True)
        self.name = f"sonify run: {holder_description()}"[:63]  # application_name's limit
        self._conn: AsyncConnection | None = None
        self._watch: asyncio.Task[None] | None = None

    async def take(self) -> None:
        """Lock, or RequestLogInUse naming the session that holds the lock."""
        holder = await self._try_lock()
        if holder is not None:
            await self.db.dispose()
            raise RequestLogInUse(
                f"the request log at {self.where} is in use by another sonify process "
                f"({holder}); stop it first, or {SEVERAL}")
        self._watch = asyncio.create_task(self._keep(), name="sonify-lease")

    async def _try_lock(self) -> str | None:
        """None once locked; else who holds the lock."""
        conn = await self.db.connect()
        try:
            await conn.execute(text("SELECT set_config('application_name', :name, false)"),
                               {"name": self.name})
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                      {"key": _LEASE_KEY})).scalar()
            if got:
                self._conn = conn
                return None
            holder = (await conn.execute(text(
                "SELECT a.application_name, a.client_addr FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                "AND l.granted AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"),
                {"hi": _LEASE_KEY >> 32, "lo": _LEASE_KEY & 0xFFFFFFFF})).first()
        except BaseException:
            await conn.close()
            raise
        await conn.close()
        if holder is None:
            return "its pid and host unknown"
        name, address = holder
        where = f", connected from {address}" if address else ""
        return f"{str(name or 'unnamed').removeprefix('sonify run: ')}{where}"

    async def _keep(self) -> None:
        """Take the lock again after the database came back (a restart drops it)."""
        told = False
        while True:
            await asyncio.sleep(HOLD_CHECK_S)
            try:
                if self._conn is not None:
                    await self._conn.execute(text("SELECT 1"))
                    continue
            except Exception:  # the connection went with the database: so did the lock
                await self._drop_connection()
            try:
                holder = await self._try_lock()
            except Exception as exc:
                if not is_unavailable(exc):
                    logger.warning("could not take the request log's lease again (%s)", exc)
                continue  # still away: the main connections say so in the log
            if holder is None:
                logger.info("took the request log's lease again")
                told = False
            elif not told:
                logger.error("while the database was away another process took the request "
                             "log's lease (%s): two processes may now answer the same jobs; "
                             "stop one of them (%s)", holder, SEVERAL)
                told = True

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()

    async def release(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.execute(text("SELECT pg_advisory_unlock(:key)"),
                                         {"key": _LEASE_KEY})
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
        await self.db.dispose()


async def take_lease(url: str) -> Lease:
    """The lease on the request log at `url` for this process (RequestLogInUse if another
    process holds it)."""
    database = sqlite_file(url)
    if database is not None:
        return FileLease.take(database)
    if make_url(url).get_backend_name() == "postgresql":
        lease = AdvisoryLease(url)
        await lease.take()
        return lease
    return NoLease()
