"""When the request log's database is away: which errors say so, and waiting it out.

One classifier decides, for every driver, whether an error means "the database cannot be
used for now" — PostgreSQL stopped, restarting or refusing connections, a connection cut;
SQLite locked, read-only, unopenable, failing to write or full — or "the file is damaged",
or is something else (a bug, a constraint). `watch_database` applies it to every statement
and every connection of a database (SQLAlchemy's engine), so callers see one of two
purpose-built exceptions, `DatabaseUnavailable` and `DatabaseDamaged`, whatever the driver
raised; a connection that failed that way is thrown away (SQLite opens a file it cannot write
read-only, and would stay read-only after the file is writable again).

`Outage` logs one line when the database goes away and one when it is back, and
`wait_out` retries an operation with backoff for up to `[storage] outage_grace_s`: the paths
that settle a request (its outcome, its refusal, the clean-up, delivery marks) wait an
outage out instead of failing through. New requests are not waited for: they are refused
at once with "try again in a moment" (see core/jobs/contract.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import DatabaseDamaged, DatabaseUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_GRACE_S = 120.0
FIRST_RETRY_S = 0.2
LONGEST_RETRY_S = 2.0  # an outage's end is noticed within this

# SQLite result codes (extended ones start with these) that mean "not now", not "wrong".
_SQLITE_AWAY = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_CANTOPEN",
                "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PROTOCOL")
_SQLITE_AWAY_WORDS = ("database is locked", "database table is locked", "readonly database",
                      "unable to open database file", "disk i/o error",
                      "database or disk is full")
_SQLITE_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_SQLITE_DAMAGED_WORDS = ("database disk image is malformed", "file is not a database")
# SQLite codes after which a connection is not to be used again (it may be read-only now).
_SQLITE_DISCARD = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR")
# PostgreSQL SQLSTATEs: class 08 (connection exception), admin/crash shutdown, cannot
# connect now (starting up, shutting down), too many connections, disk full.
_PG_AWAY_STATES = ("57P01", "57P02", "57P03", "53300", "53100")
# Set inside `wait_out`: an operation it retries that waits out outages of its own parts
# leaves the waiting to it (one bound for the whole, not one per nested part).
# (The task that waits, so that tasks started meanwhile, which copy the context, wait on their
# own.)
_WAITING: contextvars.ContextVar[asyncio.Task[Any] | None] = contextvars.ContextVar(
    "sonify_waiting_out", default=None)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, the driver error SQLAlchemy wraps (`orig`) and their causes, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(nested, BaseException):
                todo.append(nested)


def _sqlite_name(exc: BaseException) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


def is_damaged(exc: BaseException) -> bool:
    """The database file is damaged (SQLite: malformed pages, not a database at all)."""
    for err in _chain(exc):
        if isinstance(err, DatabaseDamaged):
            return True
        if isinstance(err, sqlite3.DatabaseError):
            name, text = _sqlite_name(err), str(err).lower()
            if name.startswith(_SQLITE_DAMAGED) or any(w in text for w in _SQLITE_DAMAGED_WORDS):
                return True
    return False


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be used for now — waiting may help; a bug or a refused
    statement (a constraint, bad SQL) is not."""
    for err in _chain(exc):
        if isinstance(err, DatabaseUnavailable | PoolTimeout):
            return True
        if isinstance(err, DBAPIError) and err.connection_invalidated:
            return True  # the driver's own judgement: the connection is gone
        if isinstance(err, OSError):  # refused, reset, timed out, no route, name unknown
            return True
        if isinstance(err, sqlite3.Error):
            name, text = _sqlite_name(err), str(err).lower()
            if name.startswith(_SQLITE_AWAY) or any(w in text for w in _SQLITE_AWAY_WORDS):
                return True
        state = getattr(err, "sqlstate", None)  # asyncpg's (and psycopg's) PostgreSQL errors
        if isinstance(state, str) and (state.startswith("08") or state in _PG_AWAY_STATES):
            return True
        kind = type(err).__name__
        if kind in ("ConnectionDoesNotExistError", "ConnectionFailureError") or (
                kind == "InterfaceError" and "closed" in str(err).lower()):
            return True
        if _broken_asyncpg(err):
            return True
    return False


def _broken_asyncpg(err: BaseException) -> bool:
    """asyncpg's protocol left mid-operation: a pooled connection the server ended while it
    sat idle ("terminating connection due to administrator command") says so on next use."""
    return type(err).__name__ == "InternalClientError" and "another operation" in str(err)


def _discards_connection(exc: BaseException) -> bool:
    return any(_sqlite_name(err).startswith(_SQLITE_DISCARD) or _broken_asyncpg(err)
               for err in _chain(exc))


def reason(exc: BaseException) -> str:
    """A short, one-line account of a driver error (type and first words)."""
    driver = exc
    # Down the wrappers (SQLAlchemy's `orig`, adapters' causes) to the driver's own error.
    while (inner := getattr(driver, "orig", None) or driver.__cause__) is not None:
        driver = inner
    text = " ".join(str(driver).split()) or type(driver).__name__
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(driver).__name__}: {text}"


class Outage:
    """Whether the database is away now; one log line when it goes, one when it is back."""

    def __init__(self, grace_s: float = DEFAULT_GRACE_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self.clock = clock
        self.since: float | None = None  # when the current outage was first noticed
        self.back_at: float | None = None  # when the last one ended
        # Off until the database has been reached once: a log that cannot be opened at all
        # is one line of its own (`cannot_open`), not an outage.
        self.armed = False
        self.errors: Counter[str] = Counter()  # "unavailable", "damaged" (for the metrics)

    @property
    def down(self) -> bool:
        return self.since is not None

    def noticed(self, exc: BaseException) -> None:
        """An operation failed because the database is away."""
        self.errors["unavailable"] += 1
        if self.armed and self.since is None:
            self.since = self.clock()
            logger.warning("the request log is unavailable (%s); requests that end meanwhile "
                           "are recorded once it is back (waiting up to %.0f s, [storage] "
                           "outage_grace_s); new requests are asked to try again in a moment",
                           reason(exc), self.grace_s)

    def worked(self) -> None:
        """An operation succeeded: an outage in progress is over."""
        if self.since is not None:
            self.back_at = self.clock()
            lasted, self.since = self.back_at - self.since, None
            logger.warning("the request log is back (it was unavailable for %.1f s)", lasted)

    async def wait_out(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """`op()`, tried again with backoff while the database is away, for up to `grace_s`
        from its first failure; then its DatabaseUnavailable is raised. `what` (e.g. "the
        outcome of request X") names it in the line logged when it is given up."""
        task = asyncio.current_task()
        if task is not None and _WAITING.get() is task:
            return await op()  # part of an operation whose whole is waited out
        token = _WAITING.set(task)
        try:
            delay = FIRST_RETRY_S
            deadline: float | None = None
            while True:
                try:
                    return await op()
                except DatabaseUnavailable:
                    now = self.clock()
                    if deadline is None:
                        deadline = now + self.grace_s
                    if now >= deadline:
                        logger.error("gave up recording %s: the request log has been "
                                     "unavailable for %.0f s ([storage] outage_grace_s)", what,
                                     self.grace_s)
                        raise
                    await asyncio.sleep(min(delay, max(0.0, deadline - now)))
                    delay = min(delay * 2, LONGEST_RETRY_S)
        finally:
            _WAITING.reset(token)


def watch_database(db: AsyncEngine, outage: Outage, where: str) -> None:
    """Make every failure of `db` that means "away" a DatabaseUnavailable (and "damaged"
    a DatabaseDamaged naming `where`), throw away connections left unusable, and keep
    `outage` informed."""
    sync_engine: Engine = db.sync_engine

    def on_error(context: ExceptionContext) -> None:
        exc = context.original_exception
        if is_damaged(exc):
            outage.errors["damaged"] += 1
            raise damaged_error(where, exc)
        if not is_unavailable(exc):
            return
        if _discards_connection(exc):
            context.is_disconnect = True  # the pool replaces it (and its siblings)
        outage.noticed(exc)
        raise DatabaseUnavailable(f"the request log is unavailable ({reason(exc)})")

    def on_connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        # A refused connection is an OSError that never reaches `handle_error` with asyncpg.
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            driver_error = getattr(dialect.loaded_dbapi, "Error", DBAPIError)
            if isinstance(exc, DBAPIError | driver_error):
                raise  # `handle_error` sees these
            if not is_unavailable(exc):
                raise
            outage.noticed(exc)
            raise DatabaseUnavailable(f"the request log is unavailable ({reason(exc)})"
                                      ) from exc

    def on_new(_dbapi_conn: Any, record: Any) -> None:
        record.info["sonify_born"] = outage.clock()

    # A connection made during an outage may stay unusable after it (SQLite opens a file it
    # cannot write read-only, for good) even if it was only read from: none is kept.
    def on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if outage.down and record is not None:
            record.invalidate(soft=True)  # replaced when next taken

    def on_checkout(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        # One still in use while the database came back is replaced when next taken.
        back = outage.back_at
        if back is not None and record.info.get("sonify_born", back) < back:
            raise DisconnectionError("made before the request log came back")

    def on_success(_conn: Any, _cursor: Any, _statement: Any, _params: Any, context: Any,
                   _many: Any) -> None:
        # A write: reads may go on working while writes are refused (a read-only SQLite file).
        if outage.down and context is not None and (
                context.isinsert or context.isupdate or context.isdelete):
            outage.worked()

    event.listen(sync_engine, "handle_error", on_error)
    event.listen(sync_engine, "do_connect", on_connect)
    event.listen(sync_engine, "after_cursor_execute", on_success)
    event.listen(sync_engine, "connect", on_new)
    event.listen(sync_engine, "checkout", on_checkout)
    event.listen(sync_engine, "checkin", on_checkin)


def damaged_error(where: str, exc: BaseException) -> DatabaseDamaged:
    """The one line for a damaged database file: which, why, and what to do."""
    return DatabaseDamaged(
        f"the request log {where} is damaged ({reason(exc)}); restore it from a backup, or "
        f"move it aside (with its -wal and -shm files, if any) to start with an empty one")
