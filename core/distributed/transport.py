"""The redis backend in `sonify run`: the engine records and queues; workers render.

The request log (PostgreSQL) is the truth and is shared by every process: limits, the
queue bound, whose turn it is and identical jobs in flight are counted there, in the
transaction that writes the row (core/storage/row_queue.py). A queued job goes to arq
under its request id; `sonify worker` processes render it and publish its progress on a
Redis stream that this transport reads into the handles it holds. Anything the stream
misses (a restart, Redis losing its data) is caught by comparing open handles with their
rows every `[jobs] poll_interval_s` — the row says how a job ended, and where its clip is.
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
from core.distributed.redis_queue import JobUpdate, UpdateKind, connect, enqueue, updates
from core.distributed.riders import settle_riders
from core.errors import StorageUnavailable
from core.jobs.cache import CachedClip, clip_cache
from core.jobs.dispatch import stopping_failure
from core.jobs.engine import Engine
from core.jobs.events import JobHandle, Progress, Queued, Started
from core.jobs.fair_queue import fair_round
from core.jobs.journal import Journal
from core.jobs.request import JobRequest, Receipt
from core.jobs.rows import image_sha, outcome_of, placeholder_request, with_video_columns
from core.jobs.spool import DatabaseSpool, Spool
from core.jobs.transport import User
from core.limits import Counts
from core.records import RequestRecord, RequestStatus, RowChanges
from core.storage.request_log import RequestLog

logger = logging.getLogger(__name__)

# Without timings from this process, a rough turn length for "try again in about …".
TURN_GUESS_S = 10.0


class RedisTransport:
    """The `Transport` of a `sonify run` process of the redis backend."""

    keeps_queue = True
    only_process = False

    def __init__(self, config: Config, request_log: RequestLog, *, journal: Journal,
                 clock: Callable[[], float] = time.time) -> None:
        self.jobs = config.jobs
        self.request_log = request_log
        self.journal = journal
        self.rows = request_log.row_queue
        self.cache = clip_cache(config, request_log, shared=True, clock=clock)
        self.spool: Spool = DatabaseSpool(request_log.blobs, config.video)
        self.pool: ArqRedis | None = None
        self._clock = clock
        self._handles: dict[str, JobHandle] = {}  # open jobs this process answers
        self._waiting = 0  # the queue's length, as last read
        self._tasks: list[asyncio.Task[None]] = []

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.cache.start()
        self.pool = await connect(self.jobs.redis_url)
        self._waiting = await self.rows.waiting()
        self._tasks = [asyncio.create_task(self._follow_updates(), name="sonify-updates"),
                       asyncio.create_task(self._compare_with_rows(), name="sonify-rows")]

    async def load_models(self) -> None:
        """Workers load the models; a process that only serves platforms loads none."""

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (the contract's deadline)
        """Jobs in flight go on in the workers and are answered after the next start of this
        process (their rows say where); nothing here needs the time."""
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

    def estimate_wait(self, user: User | None, counts: Counts) -> int:
        turns = math.ceil(max(1, counts.waiting) / max(1, self.jobs.max_batch))
        return max(1, math.ceil(turns * TURN_GUESS_S))

    # admitting and queueing ------------------------------------------------------------------

    async def admit(self, record: RequestRecord, rule: Callable[[Counts], None], *,
                    hour_since: float, slot: bool, place: bool) -> None:
        """The counts are the rows' (received, queued or running: a slot; received or queued
        and no rider: a place), read and written under one lock across every process."""
        await self.rows.admit(record, hour_since=hour_since, check=rule)

    def hold(self, record: RequestRecord, *, place: bool) -> None:
        """Its row holds its slot and place already."""

    def let_go(self, request_id: str) -> None:
        self._handles.pop(request_id, None)

    async def in_flight(self, key: str) -> bool:
        return await self.rows.leader(key, exclude="") is not None

    async def queue(self, handle: JobHandle, request: JobRequest, receipt: Receipt,
                    key: str) -> CachedClip | None:
        leader = await self.rows.leader(key, exclude=receipt.id)
        if leader is not None:
            await self._ride(handle, request, receipt, key, leader)
            return None
        if request.image is not None:
            await self.spool.write(receipt.id, request.image)
        turn = await self.rows.queue_fairly(
            receipt.id, request.platform, request.user_id, fair_round,
            **with_video_columns(request, RowChanges(
                cache_key=key, image_sha256=image_sha(request), caption=request.caption,
                prompt=request.prompt)))
        self._handles[receipt.id] = handle
        await self._enqueue(receipt.id, turn, receipt.created_at)
        try:  # where it stands: a nicety, already true in the rows
            position = await self.rows.position(receipt.id)
            if position is not None:
                handle.emit(Queued(position))
            self._waiting = await self.rows.waiting()
        except StorageUnavailable:
            pass  # the row comparison moves it on once the database is back
        return None

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
                    leader: RequestRecord) -> None:
        """Wait for an identical job in flight; its worker answers this row with it."""
        await self.request_log.update(receipt.id, **with_video_columns(request, RowChanges(
            status=RequestStatus.QUEUED, cache_key=key, rider_of=leader.id,
            image_sha256=image_sha(request), caption=request.caption, prompt=request.prompt)))
        self._handles[receipt.id] = handle
        # The leader may have finished while this row was written, its worker settling the
        # riders it saw: then this one takes the leader's outcome here.
        now = await self.request_log.get(leader.id)
        if now is not None and now.finished:
            await settle_riders(self.request_log, now, self._clock())
            await self._settle(handle)
        else:
            handle.emit(Queued(max(1, await self.rows.position(leader.id) or 1)))

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
        if update.kind == UpdateKind.STARTED:
            handle.emit(Started(update.batch_size or 1))
        elif update.kind == UpdateKind.PROGRESS:
            handle.emit(Progress(update.step, update.total))
        elif update.kind in (UpdateKind.DONE, UpdateKind.FAILED):
            await self._settle(handle)

    async def _settle(self, handle: JobHandle) -> None:
        """Emit how a job ended, as its row says; nothing if the row is not finished yet."""
        record = await self.request_log.get(handle.id)
        if record is None or not record.finished or self._handles.get(handle.id) is not handle:
            return
        files = await self.cache.local_files(record.files or {}) \
            if record.status == RequestStatus.DONE else None
        # The update reader and the row comparison may both get here: one settles. The
        # handle is let go only now, so that a read failing above leaves it to be settled.
        if self._handles.pop(handle.id, None) is not handle:
            return
        self.journal.record_outcome(record)
        handle.emit(outcome_of(record, files))

    async def _compare_with_rows(self) -> None:
        """Every poll interval: settle jobs whose updates were missed, move queue positions."""
        while True:
            await asyncio.sleep(self.jobs.poll_interval_s)
            try:
                self._waiting = await self.rows.waiting()
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
        elif record.status == RequestStatus.QUEUED:
            position = await self.rows.position(record.rider_of or handle.id)
            if position is not None and handle.last_event != Queued(position):
                handle.emit(Queued(position))
        elif record.status == RequestStatus.RUNNING and not isinstance(handle.last_event,
                                                          Started | Progress):
            handle.emit(Started(record.batch_size or 1))


def redis_engine(config: Config, request_log: RequestLog, *, journal: Journal | None = None,
                 clock: Callable[[], float] = time.time) -> Engine:
    """The job engine of a `sonify run` process of the redis backend; `journal`: where its
    outcomes are told (a new one by default)."""
    journal = journal or Journal()
    transport = RedisTransport(config, request_log, journal=journal, clock=clock)
    return Engine(config, request_log, transport, journal=journal, clock=clock)
