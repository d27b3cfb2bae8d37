"""The local engine while its SQLite request log cannot be written (`chattr +i`, for real):
jobs rendered meanwhile are answered once it can be — never "failed" first — new requests
are refused at once, and past `[storage] outage_grace_s` a job is handed back and answered
once after the next start."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core.errors import DatabaseUnavailable, ShuttingDown
from core.jobs.events import Done, Failed, Started
from core.storage.request_log import RequestLog
from tests.conftest import make_config
from tests.core.jobs.engine_support import (
    events_of,
    gated_engine,
    restarted_engine,
    text_request,
    wait_for,
)
from tests.local_servers import Unwritable, sqlite_files

pytestmark = pytest.mark.timeout(120)


async def until(check: Any, limit_s: float = 30.0) -> None:
    """Until `check()` holds (a state of the engine's own making, seen from outside)."""
    async with asyncio.timeout(limit_s):
        while not check():  # noqa: ASYNC110 (no event to wait on: the engine's retries)
            await asyncio.sleep(0.02)


def database_of(request_log: RequestLog) -> Path:
    return Path(request_log.engine.url.database or "")


async def test_a_job_rendered_while_the_log_is_unwritable_is_answered_once_it_is_back(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    Unwritable.check(tmp_path)
    cfg = make_config(tmp_path)
    request_log, engine, gate = await gated_engine(cfg, tiny_pipeline)
    fault = sqlite_files(database_of(request_log))
    try:
        handle = await engine.submit(text_request(cfg, "ann", "rain on a tin roof"))
        await wait_for(handle, Started)  # rendering (held at the gate)
        fault.apply()
        gate.set()
        await until(lambda: request_log.outage.down)  # its outcome cannot be written
        # A new request is refused at once: nothing of it was recorded.
        with pytest.raises(DatabaseUnavailable):
            await engine.submit(text_request(cfg, "bob", "a kettle"))
        assert not handle.finished
        fault.restore()
        result = await asyncio.wait_for(handle.result(), 30)
        assert result.files["ogg"].read_bytes()[:4] == b"OggS"
        assert [type(e) for e in events_of(handle) if isinstance(e, Done | Failed)] == [Done]
        row = await request_log.get(handle.id)
        assert row is not None and row.status == "done" and row.caption == result.caption
        # Back without a restart: the next request is taken and answered.
        again = await engine.submit(text_request(cfg, "bob", "a kettle"))
        assert (await asyncio.wait_for(again.result(), 30)).files
        assert [r.user_id for r in await request_log.rows_since(0, ["user_id"])] \
            .count("bob") == 1  # the refused one left no row
    finally:
        fault.restore()
        gate.set()
        await engine.stop(10)
        await request_log.close()


async def test_past_the_grace_a_job_is_handed_back_and_answered_once_after_a_restart(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    Unwritable.check(tmp_path)
    cfg = make_config(tmp_path, storage={"outage_grace_s": 0.5})
    request_log, engine, gate = await gated_engine(cfg, tiny_pipeline)
    fault = sqlite_files(database_of(request_log))
    try:
        handle = await engine.submit(text_request(cfg, "ann", "rain on a tin roof",
                                                  answer_owed=True))
        await wait_for(handle, Started)
        fault.apply()
        gate.set()
        ended = await wait_for(handle, Failed)
        # Not "generation failed": left for the next start, which answers it.
        assert isinstance(ended.error, ShuttingDown) and ended.error.params.get("resumes")
        row = await request_log.get(handle.id)
        assert row is not None and row.status in ("queued", "running")
        fault.restore()
    finally:
        fault.restore()
        gate.set()
        await engine.stop(10)
        await request_log.close()
    request_log, engine, handles, resumed = await restarted_engine(cfg, tiny_pipeline)
    try:
        assert resumed == 1 and [h.id for h in handles] == [handle.id]
        result = await asyncio.wait_for(handles[0].result(), 30)
        assert result.files
        row = await request_log.get(handle.id)
        assert row is not None and row.status == "done"
    finally:
        await engine.stop(10)
        await request_log.close()
