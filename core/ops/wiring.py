"""One process's metrics and health, wired to what it runs.

`sonify run` (`for_run`) answers requests: it counts them, and with the local backend it
also renders (batch sizes, stage times, the models' readiness); with the redis backend it
sees the workers through their heartbeats. `sonify worker` (`for_worker`) renders: batch
sizes, stage times and its own jobs; it does not count requests (the `sonify run` that
answers them does, so a request is counted once in the service).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from core.distributed.heartbeat import Beat, Heartbeat, read_beats
from core.distributed.redis_queue import failures
from core.distributed.transport import RedisTransport
from core.distributed.worker import RenderWorker
from core.jobs.contract import JobEngine
from core.jobs.engine import Engine
from core.jobs.journal import Journal
from core.jobs.local import LocalTransport
from core.logs import use_user_key
from core.ops import sources
from core.ops.health import Health, database_check, models_check, redis_check
from core.ops.metrics import Metrics
from core.storage.request_log import RequestLog

# The request log's key for the user hashes of JSON log lines (core/logs.py).
USER_HASH_KEY = "log-user-hash"
BEATS_TIMEOUT_S = 2.0


@dataclass
class Operations:
    """A process's metrics and health checks; `close` when the process stops."""

    metrics: Metrics
    health: Health
    _unsubscribe: Callable[[], None] = field(default=lambda: None)

    def close(self) -> None:
        self._unsubscribe()
        self._unsubscribe = lambda: None


async def for_run(request_log: RequestLog, engine: JobEngine, journal: Journal) -> Operations:
    """The operations of `sonify run` (adapters add their own checks when they start);
    `journal`: the engine's, whose outcomes the metrics count."""
    transport = engine.transport if isinstance(engine, Engine) else None
    metrics = Metrics(role="run", answers=True,
                      renders=isinstance(transport, LocalTransport))
    health = Health()
    health.add("database", database_check(request_log))
    found = metrics.sources
    found.add(sources.queue_length(engine.queue_length))
    found.add(sources.database_errors(request_log.outage))
    if isinstance(transport, LocalTransport):
        runner = transport.runner
        health.add("models", models_check(runner))
        found.add(sources.clip_cache(transport.cache))
        found.add(sources.batch_sizes(runner))
        found.add(sources.redis_errors(lambda: 0))
        found.add(sources.workers(lambda: int(runner.loaded),
                                  lambda: {"local": sources.rendered_jobs(runner)}))
    elif isinstance(transport, RedisTransport):
        redis = transport
        health.add("redis", redis_check(lambda: redis.pool))
        found.add(sources.clip_cache(redis.cache))
        found.add(sources.redis_errors(lambda: failures(redis.pool)))
        seen = _Beats()

        async def refresh() -> None:
            await seen.refresh(redis)

        metrics.add_refresher(refresh)
        found.add(sources.workers(lambda: len(seen.beats),
                                  lambda: {beat.name: beat.jobs for beat in seen.beats}))
    await _hash_users(request_log)
    return Operations(metrics, health, journal.subscribe(metrics.observe_outcome))


async def for_worker(request_log: RequestLog, worker: RenderWorker,
                     heartbeat: Heartbeat | None = None) -> Operations:
    """The operations of `sonify worker`."""
    metrics = Metrics(role="worker", answers=False, renders=True)
    health = Health()
    health.add("database", database_check(request_log))
    health.add("models", models_check(worker.runner))
    health.add("redis", redis_check(lambda: worker.pool))
    found = metrics.sources
    found.add(sources.database_errors(request_log.outage))
    found.add(sources.clip_cache(worker.cache))
    found.add(sources.batch_sizes(worker.runner))
    found.add(sources.redis_errors(
        lambda: failures(worker.pool) + (failures(heartbeat.pool) if heartbeat else 0)))
    found.add(sources.workers(None, lambda: {worker.name: worker.taken}))
    await _hash_users(request_log)
    return Operations(metrics, health, worker.journal.subscribe(metrics.observe_outcome))


class _Beats:
    """The workers' heartbeats, as read at the last scrape."""

    def __init__(self) -> None:
        self.beats: list[Beat] = []

    async def refresh(self, transport: RedisTransport) -> None:
        if transport.pool is None:
            self.beats = []
            return
        try:
            async with asyncio.timeout(BEATS_TIMEOUT_S):
                self.beats = await read_beats(transport.pool)
        except Exception:
            self.beats = []  # Redis away: no worker can take a job either
            raise


async def _hash_users(request_log: RequestLog) -> None:
    """JSON log lines hash user ids with a key every process of the service shares."""
    use_user_key(await request_log.blobs.service_key(USER_HASH_KEY, 32))
