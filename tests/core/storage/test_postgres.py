"""The request log on PostgreSQL: migrations under a lock, clips shared between machines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from sqlalchemy import inspect

from core.jobs.cache import ClipCache, cache_key
from core.options import GenerationOptions
from core.storage.migrate import head_revision
from core.storage.request_log import RequestLog
from tests.core.storage.schema import schema_revision


async def _schema(request_log: RequestLog) -> dict[str, set[str]]:
    def read(conn: object) -> dict[str, set[str]]:
        found = inspect(conn)
        return {t: {c["name"] for c in found.get_columns(t)} for t in found.get_table_names()}

    async with request_log.db.connect() as conn:
        return await conn.run_sync(read)


async def test_processes_starting_together_migrate_once_to_the_sqlite_schema(
        postgres_url: str, tmp_path: Path) -> None:
    logs = await asyncio.gather(*(RequestLog.open(postgres_url) for _ in range(4)))
    sqlite = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    try:
        assert {await schema_revision(log) for log in logs} == {head_revision()}
        assert await _schema(logs[0]) == await _schema(sqlite)
        # Opening again finds nothing to do.
        assert await logs[0].migrate() == head_revision()
    finally:
        for log in [*logs, sqlite]:
            await log.close()


async def test_a_shared_cache_restores_clips_from_the_database_and_evicts_their_bytes(
        postgres_url: str, tmp_path: Path) -> None:
    request_log = await RequestLog.open(postgres_url)
    try:
        here = ClipCache(request_log, tmp_path / "worker", 10**9, shared=True)
        there = ClipCache(request_log, tmp_path / "adapter", 10**9, shared=True)
        await here.start()
        await there.start()
        key = cache_key(model_tag="m", options=GenerationOptions(), prompt="hum", seed=1)
        audio = np.sin(np.linspace(0, 300, 16_000)).astype(np.float32)
        files, duration = here.write("c1", audio, 16_000)
        await here.add(clip_id="c1", key=key, caption="", prompt="hum", seed=1,
                       duration_s=duration, files=files)
        hit = await there.lookup(key)  # another machine: the files come from the database
        assert hit is not None and hit.files["ogg"].parent == tmp_path / "adapter"
        assert hit.files["ogg"].read_bytes() == files["ogg"].read_bytes()
        assert await request_log.clips.get_bytes("c1")
        there.max_bytes = 0
        there.keep_recent_s = 0
        assert await there.evict() == 1
        assert await request_log.clips.get_bytes("c1") == {}
        assert await there.lookup(key) is None
    finally:
        await request_log.close()
