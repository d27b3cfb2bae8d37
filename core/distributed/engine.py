"""The redis backend's engine in `sonify run`: it records and queues; workers render.

The request log (PostgreSQL) is the truth and is shared by every process: limits, the
queue bound, whose turn it is and identical jobs in flight are counted there, in the
transaction that writes the row (core/storage/shared.py). A queued job goes to arq under
its request id; `sonify worker` processes render it and publish its progress on a Redis
stream that this engine reads into the handles it holds. Anything the stream misses (a
restart, Redis losing its data) is caught by comparing open handles with their rows every
`[jobs] poll_interval_s` — the row says how a job ended, and where its clip is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from core.config import Config
from core.distributed.riders import settle_riders
from core.distributed.transport import JobUpdate, connect, enqueue, updates
from core.errors import (
    DuplicateRequest,
    GenerationFailed,
    QueueFull,
    RateLimited,
    StorageUnavailable,
)
from core.jobs.base import EngineBase
from core.jobs.cache import CachedClip, ClipCache
from core.jobs.dispatch import stopping_failure
from core.jobs.events import Done, Failed, JobHandle, Progress, Queued, Started
from core.jobs.journal import log_record_outcome
from core.jobs.request import JobRequest, Receipt
from core.jobs.rows import (
    failure_from_record,
    image_sha,
    new_request_id,
    placeholder_request,
    rebuild_request,
    record_for,
    result_from_record,
    video_columns,
)
from core.jobs.spool import DatabaseSpool
from core.storage.request_log import RequestLog, RequestRecord
from core.storage.shared import Counts

logger = logging.getLogger(__name__)

HOUR_S = 3600.0
# Without timings from this process, a rough turn length for "try again in about …".
TURN_GUESS_S = 10.0


class RedisJobEngine(EngineBase):
    """Records requests in the shared request log and queues them for `sonify worker`s."""

    def __init__(self, config: Config, request_log: RequestLog, *,
                 clock: Callable[[], float] = time.time) -> None:
        jobs = config.jobs
        cache = ClipCache(request_log, config.data_dir / "cache",
                          int(jobs.cache_max_mb * 1_000_000), clock=clock, shared=True)
        super().__init__(config, request_log, cache, DatabaseSpool(request_log.blobs,
                                                                   config.video),
                         clock=clock)
        self.shared = request_log.shared
        self.pool: ArqRedis | None = None
        self._handles: dict[str, JobHandle] = {}  # open jobs this process answers
        self._waiting = 0  # the queue's length, as last read
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.cache.start()
        self.pool = await connect(self.jobs.redis_url)
        self._to_recover = [*await self.request_log.unfinished(),
                            *await self.request_log.unanswered()]
        self._waiting = await self.shared.waiting()
        self._tasks = [asyncio.create_task(self._follow_updates(), name="sonify-updates"),
                       asyncio.create_task(self._compare_with_rows(), name="sonify-rows")]
        self._accepting = True

    async def load_models(self) -> None:
        """Workers load the models; a process that only serves platforms loads none."""

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (contract)
        """Refuse new jobs; jobs in flight go on in the workers and are answered after the
        next start of this process (their rows say where)."""
        self._accepting = False
        for handle in list(self._handles.values()):
            handle.emit(stopping_failure())
        self._handles.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None

    def queue_length(self) -> int:
        return self._waiting

    # adapter API ---------------------------------------------------------------------------

    async def receive(self, request: JobRequest) -> Receipt:
        if request.source is None or request.content_at_hand:
            raise ValueError("receive() takes a request with a source and no content")
        seed = await self._checked_seed(request)
        record = record_for(request, new_request_id(), status="received",
                            created_at=self._clock(), seed=seed)
        try:
            return await self._admit(request, record, seed, place=True, slot=True)
        except DuplicateRequest as dup:  # a redelivered request: answered once, elsewhere
            return Receipt(dup.request_id, dup.created_at, seed, duplicate=True)

    async def submit(self, request: JobRequest, *, receipt: Receipt | None = None) -> JobHandle:
        request = self._fitted(request)
        if receipt is None:
            seed = await self._checked_seed(request)
            key = self._key_for(request, seed)
            hit = await self.cache.lookup(key)
            leader = None if hit else await self.shared.leader(key, exclude="")
            record = record_for(request, new_request_id(), status="received",
                                created_at=self._clock(), seed=seed, cache_key=key)
            # Cache hits and riders cost no render: they take no queue place (as locally).
            receipt = await self._admit(request, record, seed, place=hit is None and not leader,
                                        slot=hit is None)
            return await self._go_on(request, receipt, hit)
        return await self._go_on(request, receipt)

    async def follow(self, request_id: str) -> JobHandle | None:
        """A handle on a job another process took (or this one): updates from the stream,
        the outcome from its row."""
        handle = self._handles.get(request_id)
        if handle is not None:
            return handle
        record = await self.request_log.get(request_id)
        if record is None:
            return None
        handle = JobHandle(record.id, placeholder_request(record))
        self._handles[record.id] = handle
        await self._refresh(handle)
        return handle

    # recording and queueing ----------------------------------------------------------------

    async def _admit(self, request: JobRequest, record: RequestRecord, seed: int, *,
                     place: bool, slot: bool) -> Receipt:
        """Write the row if the shared limits allow it; a refusal is logged and raised."""
        jobs = self.jobs

        def check(counts: Counts) -> None:
            if not request.is_admin:
                if counts.user_in_hour >= jobs.per_user_per_hour:
                    wait = (counts.oldest_in_hour or record.created_at) + HOUR_S \
                        - record.created_at
                    raise RateLimited("hourly limit reached", code="hourly_limit",
                                      retry_after_s=max(1, math.ceil(wait)))
                if slot and not request.extra_picture and \
                        counts.user_active >= jobs.per_user_concurrent:
                    raise RateLimited("too many requests running", code="too_many_running",
                                      retry_after_s=self._estimate(counts.waiting))
            if place and counts.waiting >= jobs.max_queue:
                raise QueueFull("queue full", code="busy",
                                retry_after_s=self._estimate(counts.waiting))

        try:
            await self.shared.admit(record, hour_since=record.created_at - HOUR_S, check=check)
        except (RateLimited, QueueFull) as exc:
            await self._log_rejection(request, exc, seed)
            raise
        return Receipt(record.id, record.created_at, seed)

    def _estimate(self, waiting: int) -> int:
        turns = math.ceil(max(1, waiting) / max(1, self.jobs.max_batch))
        return max(1, math.ceil(turns * TURN_GUESS_S))

    async def _go_on(self, request: JobRequest, receipt: Receipt,
                     hit: CachedClip | None = None) -> JobHandle:
        """From a recorded request to a queued job (or a cached clip — `hit`, when it was
        found before the row was written — or a ride). The row exists already, so a
        database outage is waited out here rather than failing the request."""
        handle = JobHandle(receipt.id, request)
        try:
            self._validate(request)
            key = self._key_for(request, receipt.seed)
            queued = await self._patiently(
                f"queueing request {receipt.id}",
                lambda: self._queue_recorded(handle, request, receipt, key, hit))
        except Exception as exc:
            self._handles.pop(receipt.id, None)
            raise await self._cannot_queue(receipt, exc) from None
        if queued:
            try:  # where it stands: a nicety, already true in the rows
                position = await self.shared.position(receipt.id)
                if position is not None:
                    handle.emit(Queued(position))
                self._waiting = await self.shared.waiting()
            except StorageUnavailable:
                pass  # the row comparison moves it on once the database is back
        return handle

    async def _queue_recorded(self, handle: JobHandle, request: JobRequest, receipt: Receipt,
                              key: str, hit: CachedClip | None) -> bool:
        """Answer a recorded request from the cache, have it ride an identical job, or queue
        it for a worker (True). Safe to run again after a failure part-way."""
        hit = hit or await self.cache.lookup(key)
        if hit is not None:
            await self.request_log.update(receipt.id, cache_key=key,
                                          image_sha256=image_sha(request),
                                          **video_columns(request))
            await self._finish_from_cache(handle, request, receipt.seed, hit,
                                          receipt.created_at)
            return False
        leader = await self.shared.leader(key, exclude=receipt.id)
        if leader is not None:
            await self._ride(handle, request, receipt, key, leader)
            return False
        if request.image is not None:
            await self.spool.write(receipt.id, request.image)
        turn = await self.shared.queue_fairly(
            receipt.id, request.platform, request.user_id, cache_key=key,
            image_sha256=image_sha(request), caption=request.caption, prompt=request.prompt,
            **video_columns(request))
        self._handles[receipt.id] = handle
        await self._enqueue(receipt.id, turn, receipt.created_at)
        return True

    async def _enqueue(self, request_id: str, turn: int, created_at: float) -> None:
        """Hand a queued row to Redis; if Redis is away the row stays queued and a worker's
        sweep hands it over later (the row, not Redis, is what was accepted)."""
        assert self.pool is not None
        try:
            await enqueue(self.pool, request_id, turn, created_at)
        except (RedisError, OSError) as exc:
            logger.warning("Redis did not take job %s (%s); it stays queued in the request "
                           "log and goes to a worker when Redis is back", request_id, exc)

    async def _ride(self, handle: JobHandle, request: JobRequest, receipt: Receipt, key: str,
                    leader: RequestRecord) -> JobHandle:
        """Wait for an identical job in flight; its worker answers this row with it."""
        await self.request_log.update(receipt.id, status="queued", cache_key=key,
                                      rider_of=leader.id, image_sha256=image_sha(request),
                                      caption=request.caption, prompt=request.prompt,
                                      **video_columns(request))
        self._handles[receipt.id] = handle
        # The leader may have finished while this row was written, its worker settling the
        # riders it saw: then this one takes the leader's outcome here.
        now = await self.request_log.get(leader.id)
        if now is not None and now.finished:
            await settle_riders(self.request_log, now, self._clock())
            await self._settle(handle)
        else:
            handle.emit(Queued(max(1, await self.shared.position(leader.id) or 1)))
        return handle

    # following jobs --------------------------------------------------------------------------

    async def _follow_updates(self) -> None:
        assert self.pool is not None
        async for update in updates(self.pool):
            handle = self._handles.get(update.request_id)
            if handle is None:
                continue
            try:
                await self._apply(handle, update)
            except StorageUnavailable:
                pass  # the database is away (logged once); the row comparison catches up
            except Exception:  # one job's update must not end the reader
                logger.exception("applying an update of %s failed", update.request_id)

    async def _apply(self, handle: JobHandle, update: JobUpdate) -> None:
        if update.kind == "started":
            handle.emit(Started(update.batch_size or 1))
        elif update.kind == "progress":
            handle.emit(Progress(update.step, update.total))
        elif update.kind in ("done", "failed"):
            await self._settle(handle)

    async def _settle(self, handle: JobHandle) -> None:
        """Emit how a job ended, as its row says; nothing if the row is not finished yet."""
        record = await self.request_log.get(handle.id)
        if record is None or not record.finished or self._handles.get(handle.id) is not handle:
            return
        event: Done | Failed = Failed(failure_from_record(record))
        if record.status == "done":
            files = await self.clip_files(record)
            event = (Done(result_from_record(record, files)) if files is not None
                     else Failed(GenerationFailed("the clip is gone", code="failed")))
        # The update reader and the row comparison may both get here: one settles. The
        # handle is let go only now, so that a read failing above leaves it to be settled.
        if self._handles.pop(handle.id, None) is not handle:
            return
        log_record_outcome(record)
        handle.emit(event)

    async def _compare_with_rows(self) -> None:
        """Every poll interval: settle jobs whose updates were missed, move queue positions."""
        while True:
            await asyncio.sleep(self.jobs.poll_interval_s)
            try:
                self._waiting = await self.shared.waiting()
                for handle in list(self._handles.values()):
                    await self._refresh(handle)
            except StorageUnavailable:
                pass  # the database is away (logged once); the next round tries again
            except Exception:
                logger.exception("comparing open jobs with their rows failed")

    async def _refresh(self, handle: JobHandle) -> None:
        record = await self.request_log.get(handle.id)
        if record is None:
            return
        if record.rider_of is not None and not record.finished:
            leader = await self.request_log.get(record.rider_of)
            if leader is not None and leader.finished:
                await settle_riders(self.request_log, leader, self._clock())
                record = await self.request_log.get(handle.id) or record
        if record.finished:
            await self._settle(handle)
        elif record.status == "queued":
            position = await self.shared.position(record.rider_of or handle.id)
            if position is not None and handle.last_event != Queued(position):
                handle.emit(Queued(position))
        elif record.status == "running" and not isinstance(handle.last_event,
                                                          Started | Progress):
            handle.emit(Started(record.batch_size or 1))

    # after a restart -------------------------------------------------------------------------

    async def _resume(self, record: RequestRecord) -> int:
        handler = self._handlers.get(record.platform)
        if record.finished:
            if handler is None:
                return 0
            handle = JobHandle(record.id, placeholder_request(record))
            self._handles[record.id] = handle
            await self._settle(handle)
            self._run_handler(handler(handle), record.id)
            return 1
        if record.status == "received" and not (record.caption or record.prompt):
            intake = self._intake_handlers.get(record.platform)
            if intake is None:
                await self._interrupt(record, handler)
                return int(handler is not None)
            seed = record.seed if record.seed is not None else 0
            self._run_handler(intake(record, Receipt(record.id, record.created_at, seed)),
                              record.id)
            return 1
        if handler is None:
            return 0  # another process (the one with this platform) follows it
        if record.status == "received":  # a text job recorded but not yet queued
            request = await rebuild_request(record, self.spool)
            if request is None:
                await self._interrupt(record, handler)
                return 1
            handle = await self._go_on(request, Receipt(record.id, record.created_at,
                                                        record.seed or 0))
        else:  # queued or running: a worker has it (or will, see RenderWorker's sweep)
            handle = JobHandle(record.id, placeholder_request(record))
            self._handles[record.id] = handle
            await self._refresh(handle)
        self._run_handler(handler(handle), record.id)
        return 1
