"""Whether a process can do its work now: the parts it depends on, each checked by name.

`/livez` says only that the process serves; `/readyz` runs these checks — the database
reachable, the models loaded where the process renders, Redis reachable with the redis
backend, each platform adapter connected — and names every part that fails. A check
answers None when its part is fine, else a few words on what is wrong (never a password,
a URL or a driver's message: those are in the log).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy import text

from core.errors import DatabaseDamaged, StorageUnavailable
from core.jobs.model_runner import ModelRunner
from core.storage.request_log import RequestLog

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0

Check = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True)
class Readiness:
    """Every check's answer: "ok", or what is wrong."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(state == "ok" for state in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, state in self.checks.items() if state != "ok"]

    def body(self) -> dict[str, object]:
        """The JSON answer of /readyz."""
        if self.ready:
            return {"status": "ready", "checks": self.checks}
        return {"status": "not ready", "failing": self.failing, "checks": self.checks}


class Health:
    """The named checks of one process."""

    def __init__(self, timeout_s: float = CHECK_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    async def readiness(self) -> Readiness:
        """Run every check at once, each within `timeout_s`."""
        names = list(self._checks)
        answers = await asyncio.gather(*(self._run(name) for name in names))
        return Readiness(dict(zip(names, answers, strict=True)))

    async def _run(self, name: str) -> str:
        try:
            async with asyncio.timeout(self.timeout_s):
                problem = await self._checks[name]()
        except TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        except Exception as exc:
            logger.debug("readiness check %s failed", name, exc_info=True)
            return f"check failed ({type(exc).__name__})"
        return "ok" if problem is None else problem


def database_check(request_log: RequestLog) -> Check:
    """The request log's database answers a query."""

    async def check() -> str | None:
        try:
            async with request_log.db.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except DatabaseDamaged:
            return "damaged"
        except StorageUnavailable:
            return "unavailable"
        return None

    return check


def models_check(runner: ModelRunner) -> Check:
    """The models of a process that renders are loaded."""

    async def check() -> str | None:
        return None if runner.loaded else "not loaded"

    return check


def redis_check(pool: Callable[[], ArqRedis | None]) -> Check:
    """The queue's Redis answers a ping."""

    async def check() -> str | None:
        connection = pool()
        if connection is None:
            return "not connected"
        try:
            await connection.ping()
        except (RedisError, OSError) as exc:
            logger.debug("Redis did not answer a ping: %s", exc)
            return "unreachable"
        return None

    return check
