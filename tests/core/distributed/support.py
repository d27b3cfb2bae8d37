"""A redis-backend service in one test: adapter-side engines and workers on real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from core.config import Config
from core.distributed.transport import redis_engine
from core.distributed.worker import RenderWorker
from core.jobs.engine import Engine
from core.storage.request_log import RequestLog
from tests.conftest import make_config


def redis_config(root: Path, database_url: str, redis_url: str, **jobs: Any) -> Config:
    """A tiny-model config for the redis backend; `root` keeps this process's files."""
    return make_config(root, jobs={"backend": "redis", "redis_url": redis_url,
                                   "redeliver_after_s": 5.0, "poll_interval_s": 0.2,
                                   "max_wait_ms": 200, **jobs},
                       storage={"database_url": database_url})


@asynccontextmanager
async def adapter_engine(config: Config) -> AsyncIterator[Engine]:
    """The engine a `sonify run` process of the redis backend holds."""
    request_log = await RequestLog.open(config.database_url,
                                       outage_grace_s=config.storage.outage_grace_s)
    engine = redis_engine(config, request_log)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await request_log.close()


@asynccontextmanager
async def render_worker(config: Config, pipeline: Any, name: str = "w1"
                        ) -> AsyncIterator[RenderWorker]:
    """A started `sonify worker` in this process."""
    request_log = await RequestLog.open(config.database_url,
                                       outage_grace_s=config.storage.outage_grace_s)
    worker = RenderWorker(config, request_log, pipeline_factory=lambda: pipeline, name=name)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop(10)
        await request_log.close()


async def eventually(check: Any, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Wait until the async `check()` is true (polling the database: workers elsewhere)."""
    async with asyncio.timeout(timeout):
        # Polling: the change happens in another process's rows, no event reaches this one.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
