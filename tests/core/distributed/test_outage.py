"""The redis backend while PostgreSQL is stopped under a job (a real `pg_ctl stop -m fast`):
the worker records the outcome once the database is back and does not take the job twice;
past `[storage] outage_grace_s` it gives the job back to the queue instead of holding it,
and the next take answers it — once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import DatabaseUnavailable, RequestLogInUse
from core.jobs.events import Done, Failed, Started
from core.storage.request_log import RequestLog
from tests.core.distributed.support import adapter_engine, redis_config, render_worker
from tests.core.jobs.engine_support import WrappedPipeline, events_of, text_request, wait_for
from tests.local_servers import PostgresServer, RedisServer

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


async def test_an_outcome_waits_for_postgres_and_the_job_is_taken_once(
        tmp_path: Path, halting_postgres: PostgresServer, redis_server: RedisServer,
        tiny_pipeline: Any) -> None:
    url = halting_postgres.new_database()
    adapter_cfg = redis_config(tmp_path / "adapter", url, redis_server.url)
    worker_cfg = redis_config(tmp_path / "worker", url, redis_server.url)
    gate = threading.Event()
    async with adapter_engine(adapter_cfg) as engine:
        handle = await engine.submit(text_request(adapter_cfg, "ann", "rain on a tin roof"))
        async with render_worker(worker_cfg, WrappedPipeline(tiny_pipeline, gate=gate),
                                 name="w1") as worker:
            try:
                await wait_for(handle, Started)
                await asyncio.to_thread(halting_postgres.halt)
                gate.set()
                await until(lambda: worker.request_log.outage.down)
                # New requests are refused at once meanwhile: nothing was recorded.
                with pytest.raises(DatabaseUnavailable):
                    await engine.submit(text_request(adapter_cfg, "bob", "a kettle"))
                assert not handle.finished
            finally:
                gate.set()
                await asyncio.to_thread(halting_postgres.resume)
            result = await asyncio.wait_for(handle.result(), 60)
            assert worker.taken == 1  # held and settled, never handed out again
        assert result.files["ogg"].read_bytes()[:4] == b"OggS"
        assert [type(e) for e in events_of(handle) if isinstance(e, Done | Failed)] == [Done]
        row = await engine.request_log.get(handle.id)
        assert row is not None and (row.status, row.worker, row.attempts) == ("done", "w1", 1)


async def test_past_the_grace_the_worker_gives_the_job_back_and_it_is_answered_once(
        tmp_path: Path, halting_postgres: PostgresServer, redis_server: RedisServer,
        tiny_pipeline: Any, caplog: pytest.LogCaptureFixture) -> None:
    url = halting_postgres.new_database()
    adapter_cfg = redis_config(tmp_path / "adapter", url, redis_server.url)
    worker_cfg = redis_config(tmp_path / "worker", url, redis_server.url).with_section(
        "storage", database_url=url, outage_grace_s=0.5)
    gate = threading.Event()
    async with adapter_engine(adapter_cfg) as engine:
        handle = await engine.submit(text_request(adapter_cfg, "ann", "rain on a tin roof"))
        async with render_worker(worker_cfg, WrappedPipeline(tiny_pipeline, gate=gate),
                                 name="w1") as worker:
            try:
                await wait_for(handle, Started)
                await asyncio.to_thread(halting_postgres.halt)
                gate.set()
                await until(lambda: "goes back to the queue" in caplog.text)
                assert handle.id not in worker._held  # its lease is no longer renewed
                assert not handle.finished
            finally:
                gate.set()
                await asyncio.to_thread(halting_postgres.resume)
            result = await asyncio.wait_for(handle.result(), 60)
            assert worker.taken >= 2  # taken again once the database was back
        assert result.files
        assert [type(e) for e in events_of(handle) if isinstance(e, Done | Failed)] == [Done]
    check = await RequestLog.open(url)
    try:
        row = await check.get(handle.id)
        assert row is not None and row.status == "done"
    finally:
        await check.close()


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
