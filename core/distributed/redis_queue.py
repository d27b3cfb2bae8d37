"""Redis as the transport between adapters and workers: arq's job queue and an event stream.

Redis holds nothing that cannot be rebuilt: the rows in the request log are the truth.
A job's arq id is its request id, so enqueueing a job that is already queued (or whose
result is still kept) does nothing — which is what lets any process put every queued row
back after Redis lost its data. Live updates (started, progress, done, failed) go through
one Redis stream that every adapter process reads; one that misses them (a restart, Redis
lost) still learns the outcome from the row.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import ConfigError, QueueUnavailable

logger = logging.getLogger(__name__)

QUEUE_NAME = "sonify:jobs"
RENDER_FUNCTION = "render"
EVENTS_STREAM = "sonify:events"
EVENTS_KEPT = 10_000  # stream entries kept (approximately): minutes of events, not history
# A job's arq score says when it may start and orders the queue; Sonify's are small numbers
# (far in the past, so always due): the fair round first, then arrival.
_ROUND_SPAN_MS = 1 << 20
ONE_DAY_S = 86_400
CONNECT_TRIES = 3
T = TypeVar("T")
# What counts as "Redis failed" for the metrics: it could not be reached or did not answer
# (not a refused command, nor arq's optimistic-lock conflicts).
_FAILURES = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


def redis_settings(url: str) -> RedisSettings:
    """arq's settings for `[jobs] redis_url`, read as redis-py reads a URL.

    arq's own `RedisSettings.from_dsn` passes the user name and password on as written, still
    percent-encoded — so a password with "@", "/", "%", "#" or "?" (which a URL must encode)
    could not be given at all — and ignores `?password=`. redis-py's parser decodes both.
    """
    try:
        parts = parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"[jobs] redis_url: {exc}") from None
    return RedisSettings(
        host=parts.get("host", "localhost"), port=parts.get("port", 6379),
        unix_socket_path=parts.get("path"), database=parts.get("db", 0),
        username=parts.get("username"), password=parts.get("password"),
        ssl=parts.get("connection_class") is SSLConnection)


class _Tally:
    count = 0


class CountingRetry(Retry):
    """redis-py's retry policy without retries (its default), counting each failure of a
    command or a connection attempt: every call on every connection of a pool passes here."""

    def __init__(self, tally: _Tally | None = None) -> None:
        super().__init__(NoBackoff(), 0)
        self.tally = tally or _Tally()

    def __deepcopy__(self, memo: dict[int, Any]) -> CountingRetry:
        return CountingRetry(self.tally)  # each connection copies it: they share one tally

    async def call_with_retry(self, do: Callable[[], Awaitable[T]],
                              fail: Callable[[RedisError], Any]) -> T:
        try:
            return await super().call_with_retry(do, fail)
        except _FAILURES:
            self.tally.count += 1
            raise


def failures(pool: ArqRedis | None) -> int:
    """How many commands and connection attempts of `pool` failed (Redis away, no answer)."""
    retry = pool.connection_pool.connection_kwargs.get("retry") if pool is not None else None
    return retry.tally.count if isinstance(retry, CountingRetry) else 0


async def connect(url: str) -> ArqRedis:
    """A connection pool to the queue's Redis; QueueUnavailable (one line, no password)
    when it cannot be reached after a few tries. Its failures are counted (`failures`)."""
    settings = redis_settings(url)
    settings.conn_retries, settings.conn_retry_delay = CONNECT_TRIES, 1
    settings.retry = CountingRetry()
    try:
        return await create_pool(settings, default_queue_name=QUEUE_NAME)
    except (RedisError, OSError) as exc:
        where = f"{settings.host}:{settings.port}"
        raise QueueUnavailable(f"cannot reach Redis at {where} ([jobs] redis_url): "
                               f"{type(exc).__name__}: {exc}") from None


def fair_score(fair_round: int, created_at: float) -> datetime.datetime:
    """The arq start time that orders a job by its round, then by arrival."""
    arrival_ms = int(created_at * 1000) % _ROUND_SPAN_MS
    ms = fair_round * _ROUND_SPAN_MS + arrival_ms
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)


async def enqueue(pool: ArqRedis, request_id: str, fair_round: int, created_at: float) -> bool:
    """Queue the render of one request; False when it is queued already (same id)."""
    job = await pool.enqueue_job(RENDER_FUNCTION, request_id, _job_id=request_id,
                                 _queue_name=QUEUE_NAME,
                                 _defer_until=fair_score(fair_round, created_at),
                                 # The score is in the past on purpose: arq's default expiry
                                 # counts from it, so give one that counts from now.
                                 _expires=ONE_DAY_S)
    return job is not None


class UpdateKind(StrEnum):
    """What a job update says."""

    STARTED = "started"  # its batch began rendering
    PROGRESS = "progress"  # a diffusion step
    DONE = "done"  # its row says done: read it
    FAILED = "failed"  # its row says how it failed: read it
    # Not from a worker: the reader lost the stream (Redis away) and may have missed
    # updates; whoever reads it compares its open jobs with their rows meanwhile.
    LOST = "lost"


@dataclass(frozen=True)
class JobUpdate:
    """One event of one job, as workers publish it."""

    request_id: str
    kind: UpdateKind
    step: int = 0
    total: int = 0
    batch_size: int = 0
    code: str = ""

    def fields(self) -> dict[str, str]:
        return {"id": self.request_id, "kind": self.kind, "step": str(self.step),
                "total": str(self.total), "batch": str(self.batch_size), "code": self.code}

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes]) -> JobUpdate:
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(data["id"], UpdateKind(data["kind"]), int(data.get("step", 0)),
                   int(data.get("total", 0)), int(data.get("batch", 0)), data.get("code", ""))


async def publish(pool: ArqRedis, update: JobUpdate) -> None:
    """Tell every adapter process about a job's progress (best effort: rows are the truth)."""
    try:
        await pool.xadd(EVENTS_STREAM, update.fields(),  # type: ignore[arg-type]  # redis-py types field values narrowly
                        maxlen=EVENTS_KEPT, approximate=True)
    except RedisError as exc:
        logger.warning("could not publish %s of %s: %s", update.kind, update.request_id, exc)


async def updates(pool: ArqRedis, *, block_ms: int = 1000) -> AsyncIterator[JobUpdate]:
    """Every update published from now on (reading on through Redis restarts)."""
    last = "$"
    while True:
        try:
            batches = await pool.xread({EVENTS_STREAM: last}, block=block_ms, count=100)
        except RedisError as exc:
            logger.warning("reading job updates failed (%s); retrying", exc)
            last = "$"
            yield JobUpdate("", UpdateKind.LOST)  # the caller re-reads its rows meanwhile
            await asyncio.sleep(1.0)
            continue
        for _stream, entries in batches or []:
            for entry_id, raw in entries:
                last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                yield JobUpdate.from_fields(raw)
