"""While the request log's database is away (issue 20), on both backends, for real: the
local backend's SQLite file made unwritable (`chattr +i`), the redis backend's PostgreSQL
stopped (`pg_ctl stop -m fast`). New requests are refused at once, with nothing recorded;
a job whose outcome waits for the database is answered once it is back — never failed
first — and one that waited past `[storage] outage_grace_s` is handed back, to be answered
once: by the next start (local) or the next take of a worker (redis)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from core.errors import DatabaseUnavailable, ShuttingDown
from core.jobs.events import Done, Failed, Started
from core.jobs.request import JobRequest
from tests.core.jobs.contract.harness import Backend, fetch_request, until
from tests.core.jobs.engine_support import WrappedPipeline, events_of, text_request, wait_for

pytestmark = pytest.mark.timeout(240)


async def test_a_job_rendered_during_an_outage_is_answered_once_it_is_back(
        backend: Backend, tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = backend.config()
    pipeline = WrappedPipeline(tiny_pipeline, gate=gate)
    async with backend.running(cfg, pipeline) as service:
        engine = service.engine
        fault = backend.fault(service)
        handle = await engine.submit(text_request(cfg, "ann", "rain on a tin roof"))
        await wait_for(handle, Started)
        await service.until_status(handle.id, "running")
        try:
            await asyncio.to_thread(fault.apply)
            gate.set()
            await until(lambda: service.outage_noticed)  # its outcome cannot be written
            # New requests are refused at once: nothing of them is recorded.
            refused: list[JobRequest] = [text_request(cfg, "bob", "a kettle"),
                                         fetch_request(cfg, "bob", n=2)]
            with pytest.raises(DatabaseUnavailable):
                await engine.submit(refused[0])
            with pytest.raises(DatabaseUnavailable):
                await engine.receive(refused[1])
            assert not handle.finished
        finally:
            gate.set()
            await asyncio.to_thread(fault.restore)
        result = await asyncio.wait_for(handle.result(), 60)
        assert pipeline.calls == [1]  # held and settled, never taken and rendered again
        assert result.files["ogg"].read_bytes()[:4] == b"OggS"
        assert [type(e) for e in events_of(handle) if isinstance(e, Done | Failed)] == [Done]
        row = await service.request_log.get(handle.id)
        assert row is not None and row.status == "done" and row.caption == result.caption
        # Back without a restart: the next request is taken and answered.
        again = await engine.submit(text_request(cfg, "bob", "a kettle"))
        assert (await asyncio.wait_for(again.result(), 60)).files
        users = [r.user_id for r in await service.request_log.rows_since(0)]
    assert users.count("bob") == 1  # the refused ones left no row


async def test_past_the_grace_a_job_is_handed_back_and_answered_once(
        backend: Backend, tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = backend.config(storage={"outage_grace_s": 0.5})
    service = await backend.start(cfg, WrappedPipeline(tiny_pipeline, gate=gate))
    try:
        handle = await service.engine.submit(text_request(cfg, "ann", "rain on a tin roof"))
        await wait_for(handle, Started)
        await service.until_status(handle.id, "running")
        fault = backend.fault(service)
        try:
            await asyncio.to_thread(fault.apply)
            gate.set()
            await until(lambda: handle.finished or service.outage_noticed)
            await asyncio.sleep(1.5)  # well past the grace: whoever rendered it gave it back
        finally:
            await asyncio.to_thread(fault.restore)
        # Either told "answered after the next start" (one process: its outcome could not
        # be recorded), or answered by a worker's next take of the job — never failed.
        ended = await asyncio.wait_for(wait_for(handle, Done | Failed), 90)
        assert [type(e) for e in events_of(handle) if isinstance(e, Done | Failed)] == [
            type(ended)]
    finally:
        gate.set()
        await service.stop()
    service, handed = await backend.restart(cfg, tiny_pipeline)
    try:
        if isinstance(ended, Failed):
            assert isinstance(ended.error, ShuttingDown) and ended.error.params.get("resumes")
            assert [h.id for h in handed] == [handle.id]
            assert (await asyncio.wait_for(handed[0].result(), 60)).files
        else:
            assert handed == []  # answered already, once
        row = await service.request_log.get(handle.id)
        assert row is not None and row.status == "done"
    finally:
        await service.stop()
