"""Which errors mean "the database is away", and a SQLite log that comes back by itself.

The errors here are real ones, made by real SQLite files and sockets; the unwritable file
is made so with `chattr +i` (tests/local_servers.py), which binds root as well.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import time
from pathlib import Path

import pytest

from core.errors import DatabaseUnavailable
from core.records import RequestRecord
from core.storage.outage import Outage, is_damaged, is_unavailable
from core.storage.request_log import RequestLog
from tests.local_servers import Unwritable, sqlite_files


def sqlite_error(tmp_path: Path, how: str) -> sqlite3.Error:
    """The error SQLite itself raises for each kind of trouble."""
    path = tmp_path / f"{how}.db"
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    setup.commit()
    setup.close()
    try:
        if how == "locked":
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            other = sqlite3.connect(path, timeout=0)
            other.execute("INSERT INTO t VALUES (1)")
        elif how == "readonly":
            sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("INSERT INTO t VALUES (1)")
        elif how == "cantopen":
            sqlite3.connect(tmp_path / "no" / "such" / "folder.db").execute("SELECT 1")
        elif how == "notadb":
            path.write_bytes(b"this is not a database, " * 100)
            sqlite3.connect(path).execute("SELECT * FROM t")
        elif how == "constraint":
            conn = sqlite3.connect(path)
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("INSERT INTO t VALUES (1)")
        elif how == "syntax":
            sqlite3.connect(path).execute("SELEKT 1")
    except sqlite3.Error as exc:
        return exc
    raise AssertionError(f"no error for {how}")


@pytest.mark.parametrize(("how", "away", "damaged"), [
    ("locked", True, False), ("readonly", True, False), ("cantopen", True, False),
    ("notadb", False, True), ("constraint", False, False), ("syntax", False, False)])
def test_sqlite_errors_are_told_apart(tmp_path: Path, how: str, away: bool,
                                      damaged: bool) -> None:
    error = sqlite_error(tmp_path, how)
    assert (is_unavailable(error), is_damaged(error)) == (away, damaged), error


async def test_a_refused_connection_is_unavailable_a_bug_is_not() -> None:
    with pytest.raises(OSError) as refused:
        await asyncio.open_connection("127.0.0.1", closed_port())
    assert refused.value.errno == errno.ECONNREFUSED and is_unavailable(refused.value)
    assert not is_unavailable(ValueError("a bug")) and not is_unavailable(KeyError("x"))


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def row(n: int) -> RequestRecord:
    return RequestRecord(id=f"r{n:011d}", platform="web", user_id="u", chat_id="c",
                         source_kind="text", status="queued", created_at=time.time())


async def test_an_unwritable_sqlite_log_recovers_without_a_restart(tmp_path: Path) -> None:
    """Connections opened while the file is unwritable are read-only for good: they are
    replaced, so writes work again as soon as the file can be written."""
    Unwritable.check(tmp_path)
    database = tmp_path / "log.db"
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{database}")
    fault = sqlite_files(database)
    try:
        await request_log.insert(row(0))
        fault.apply()
        # Several at once: the pool opens more connections, each one read-only.
        results = await asyncio.gather(*(request_log.insert(row(n)) for n in range(1, 9)),
                                       return_exceptions=True)
        assert all(isinstance(r, DatabaseUnavailable) for r in results), results
        assert request_log.outage.down
        assert await request_log.get(row(0).id) is not None  # reading still works
        fault.restore()
        await asyncio.gather(*(request_log.insert(row(n)) for n in range(10, 18)))
        assert not request_log.outage.down
        assert len(await request_log.rows_since(0, ["id"])) == 9
    finally:
        fault.restore()
        await request_log.close()


async def test_wait_out_retries_until_it_works_and_gives_up_after_the_grace() -> None:
    outage = Outage(grace_s=0.5)
    calls: list[float] = []

    async def away_twice() -> str:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise DatabaseUnavailable("away")
        return "recorded"

    assert await outage.wait_out(away_twice, "a test") == "recorded" and len(calls) == 3

    async def always_away() -> None:
        raise DatabaseUnavailable("away")

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        await outage.wait_out(always_away, "a test")
    assert time.monotonic() - started >= 0.5

    async def a_bug() -> None:
        raise ValueError("not an outage")

    with pytest.raises(ValueError):  # not retried
        await outage.wait_out(a_bug, "a test")
