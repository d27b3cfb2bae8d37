"""A local backend's lease on a PostgreSQL request log survives a restart of PostgreSQL (a
real `pg_ctl stop -m fast`). The jobs of both backends during such an outage are the
contract suite's (tests/core/jobs/contract/test_outages.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from core.errors import DatabaseUnavailable, RequestLogInUse
from core.storage.request_log import RequestLog
from tests.local_servers import PostgresServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def halting_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of these tests' own: they stop and start it."""
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


async def until(check: Any, limit_s: float = 60.0) -> None:
    async with asyncio.timeout(limit_s):
        while not check():  # noqa: ASYNC110 (no event to wait on: another party's retries)
            await asyncio.sleep(0.02)


async def test_a_local_backends_postgres_lease_is_taken_again_after_a_restart(
        halting_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart of PostgreSQL drops session locks: the owner takes its lease again as soon
    as the database is back, before anyone else can."""
    import core.storage.ownership as ownership

    monkeypatch.setattr(ownership, "HOLD_CHECK_S", 0.1)
    url = halting_postgres.new_database()
    owner = await RequestLog.open(url)
    other = await RequestLog.open(url)
    try:
        await owner.take_lease()
        await asyncio.to_thread(halting_postgres.halt)
        await asyncio.to_thread(halting_postgres.resume)

        async def refused() -> bool:
            try:
                await other.take_lease()
            except RequestLogInUse:
                return True
            except DatabaseUnavailable:
                return False  # its pooled connections are finding out the restart
            await other.release_lease()
            return False

        async with asyncio.timeout(30):
            while not await refused():  # noqa: ASYNC110 (another party's retries)
                await asyncio.sleep(0.05)
    finally:
        await owner.close()
        await other.close()
