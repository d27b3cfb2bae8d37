"""Workers say they are alive: a key per worker in Redis, renewed every few seconds.

Each `sonify worker` writes ``sonify:workers:<name>`` (how many jobs it took, whether its
models are loaded) with an expiry of a few intervals; a worker that stops or dies lets its
key expire. `sonify run` reads them when its metrics are scraped: the workers alive, and
jobs per worker. Nothing depends on them but the metrics and the worker's own readiness.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from arq.connections import ArqRedis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

KEY_PREFIX = "sonify:workers:"
INTERVAL_S = 5.0
KEPT_FOR = 3  # intervals a key outlives its last renewal


@dataclass(frozen=True)
class Beat:
    """What one worker said last."""

    name: str
    jobs: int
    models_loaded: bool
    at: float


class Heartbeat:
    """Renews this worker's key until stopped; `ok` says whether the last renewal worked."""

    def __init__(self, pool: ArqRedis, name: str, *, jobs: Callable[[], int],
                 models_loaded: Callable[[], bool], interval_s: float = INTERVAL_S) -> None:
        self.pool, self.name, self.interval_s = pool, name, interval_s
        self._jobs, self._models_loaded = jobs, models_loaded
        self.ok = False
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sonify-heartbeat")

    async def beat(self) -> None:
        """Write the key once (RedisError when Redis is away)."""
        value = json.dumps({"jobs": self._jobs(), "models_loaded": self._models_loaded(),
                            "at": time.time()})
        await self.pool.set(KEY_PREFIX + self.name, value,
                            px=int(self.interval_s * KEPT_FOR * 1000))

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
                self.ok, self.last_error = True, ""
            except (RedisError, OSError) as exc:
                if self.ok or not self.last_error:
                    logger.warning("worker %s: could not renew its heartbeat (%s)", self.name,
                                   exc)
                self.ok, self.last_error = False, type(exc).__name__
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        """Stop renewing and remove the key (the worker is gone, not silent)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.pool.delete(KEY_PREFIX + self.name)
        except (RedisError, OSError):
            pass  # it expires by itself


async def read_beats(pool: ArqRedis) -> list[Beat]:
    """Every worker whose key has not expired (RedisError when Redis is away)."""
    keys = [key async for key in pool.scan_iter(match=KEY_PREFIX + "*", count=100)]
    if not keys:
        return []
    beats: list[Beat] = []
    for key, raw in zip(keys, await pool.mget(keys), strict=True):
        if raw is None:
            continue  # expired between the scan and the read
        name = (key.decode() if isinstance(key, bytes) else str(key))[len(KEY_PREFIX):]
        try:
            data = json.loads(raw)
            beats.append(Beat(name, int(data["jobs"]), bool(data["models_loaded"]),
                              float(data["at"])))
        except (ValueError, KeyError, TypeError):
            logger.debug("unreadable heartbeat of worker %s", name)
    return sorted(beats, key=lambda beat: beat.name)
