"""/livez and /readyz of a redis-backend service (a web process and a worker) on a real
PostgreSQL and Redis: ready only once each part works, 503 naming the part while PostgreSQL
or Redis is stopped, and 200 again after — with the workers' heartbeats, jobs per worker and
the errors counted on /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.ops.server import OpsServer
from bot.web.server import create_app
from core.distributed.heartbeat import Heartbeat
from core.distributed.redis_queue import connect
from core.distributed.worker import RenderWorker
from core.ops.wiring import for_worker
from core.services import Services
from core.storage.request_log import RequestLog
from tests.bot.web.conftest import png_bytes, read_events, upload_form
from tests.bot.web.test_metrics import parse, value
from tests.core.distributed.support import redis_config
from tests.local_servers import PostgresServer, RedisServer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def halting_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own: it is stopped and started again."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def answer(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


async def until(check: Any, limit_s: float = 60.0) -> None:
    """Poll `check()` until true: the service notices a server coming or going by itself."""
    async with asyncio.timeout(limit_s):
        while not await check():  # noqa: ASYNC110 (the change is in another server)
            await asyncio.sleep(0.1)


async def scrape(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        return parse(await resp.text())[1]


@pytest.fixture
async def worker_ops(tmp_path: Path, halting_postgres: PostgresServer,
                     redis_server: RedisServer, tiny_pipeline: Any
                     ) -> AsyncIterator[tuple[str, RenderWorker, Any]]:
    """`sonify worker` in this process (before its models load) with its heartbeat and its
    own /metrics, /livez and /readyz: (its URL, the worker, its config)."""
    url = halting_postgres.new_database()
    config = redis_config(tmp_path / "w1", url, redis_server.url)
    request_log = await RequestLog.open(url)
    worker = RenderWorker(config, request_log, pipeline_factory=lambda: tiny_pipeline,
                          name="w1")
    heartbeat = Heartbeat(await connect(redis_server.url), "w1", jobs=lambda: worker.taken,
                          models_loaded=lambda: worker.runner.loaded, interval_s=0.2)
    heartbeat.start()
    ops = await for_worker(request_log, worker, heartbeat)
    server = OpsServer(ops, "127.0.0.1", 0)
    await server.start()
    try:
        yield server.url, worker, config
    finally:
        await server.stop()
        await heartbeat.stop()
        await heartbeat.pool.aclose()
        await worker.stop(10)
        ops.close()
        await request_log.close()


async def test_readyz_names_the_part_that_is_away_and_recovers(
        tmp_path: Path, worker_ops: tuple[str, RenderWorker, Any],
        halting_postgres: PostgresServer, redis_server: RedisServer) -> None:
    worker_url, worker, worker_config = worker_ops
    session = aiohttp.ClientSession()
    # Not ready until its models are loaded and it is connected to the queue.
    assert await answer(session, f"{worker_url}/livez") == (200, {"status": "ok"})
    assert await answer(session, f"{worker_url}/readyz") == (503, {
        "status": "not ready", "failing": ["models", "redis"],
        "checks": {"database": "ok", "models": "not loaded", "redis": "not connected"}})
    await worker.load_models()
    await worker.start()
    assert (await answer(session, f"{worker_url}/readyz"))[0] == 200

    config = redis_config(tmp_path / "run", worker_config.storage.database_url,
                          redis_server.url)
    services = await Services.create(config)
    client = TestClient(TestServer(create_app(services)))
    await client.start_server()
    web = str(client.make_url("")).rstrip("/")
    try:
        assert await answer(session, f"{web}/readyz") == (200, {
            "status": "ready", "checks": {"database": "ok", "redis": "ok"}})

        # The worker's heartbeat is seen; a job goes through it and is counted there.
        async def worker_seen() -> bool:
            return value(await scrape(session, web), "sonify_workers_alive") == 1

        await until(worker_seen)
        resp = await client.post("/api/jobs", data=upload_form(png_bytes()))
        assert resp.status == 202, await resp.text()
        assert (await read_events(client, (await resp.json())["id"]))[-1][0] == "done"

        async def job_counted() -> bool:
            samples = await scrape(session, web)
            return value(samples, "sonify_worker_jobs_total", worker="w1") == 1

        await until(job_counted)
        at_web = await scrape(session, web)
        assert value(at_web, "sonify_requests_total", platform="web", kind="upload",
                     outcome="done", code="") == 1
        at_worker = await scrape(session, worker_url)
        assert value(at_worker, "sonify_batch_size_count") == 1
        assert value(at_worker, "sonify_stage_seconds_count", stage="sound") == 1
        assert value(at_worker, "sonify_worker_jobs_total", worker="w1") == 1
        # Counted once in the service: where it was answered, not where it was rendered.
        assert not [key for key in at_worker if key[0] == "sonify_requests_total"]

        # PostgreSQL stopped: both say so, naming the database; back once it is.
        await asyncio.to_thread(halting_postgres.halt)
        for url in (web, worker_url):
            status, body = await answer(session, f"{url}/readyz")
            assert status == 503
            assert body["failing"] == ["database"]
            assert body["checks"]["database"] == "unavailable"
        assert (await answer(session, f"{web}/livez"))[0] == 200
        await asyncio.to_thread(halting_postgres.resume)
        for url in (web, worker_url):
            async def ready_again(url: str = url) -> bool:
                return (await answer(session, f"{url}/readyz"))[0] == 200

            await until(ready_again)
        errors = value(await scrape(session, web), "sonify_database_errors_total",
                       kind="unavailable")
        assert errors >= 1

        # Redis stopped: the same for Redis, its errors counted; no worker is seen alive.
        redis_server.stop()
        status, body = await answer(session, f"{web}/readyz")
        assert (status, body["failing"], body["checks"]["redis"]) == (
            503, ["redis"], "unreachable")
        samples = await scrape(session, web)
        assert value(samples, "sonify_redis_errors_total") >= 1
        assert value(samples, "sonify_workers_alive") == 0
        redis_server.start()

        async def redis_back() -> bool:
            return (await answer(session, f"{web}/readyz"))[0] == 200

        await until(redis_back)
    finally:
        await session.close()
        await client.close()
        await services.close()
