"""`sonify worker`: one GPU worker of the redis backend, on arq.

A worker takes up to `max_batch` jobs from arq's queue at a time (arq's `max_jobs`) and
hands them to the same `Dispatcher` and `ModelRunner` as the local engine, so jobs of
different users with equal options share one model call and a failing job fails alone.
The request log (shared with every process) is the truth; Redis only carries jobs and
updates:

- **Leases.** A job's arq "in progress" key is renewed every third of
  `[jobs] redeliver_after_s` while this worker holds it; a worker that dies stops renewing,
  and another worker takes the job once the key has expired.
- **Bounded retries.** Each take of a job counts an attempt in its row. A job taken more
  than `[jobs] max_tries` times (it keeps taking workers down) fails alone with an apology;
  one taken again after a crash renders in a batch of its own.
- **Nothing lost with Redis.** Every `redeliver_after_s / 2` the worker puts the rows still
  queued or running back into arq when Redis no longer knows them (a restart without
  persistence). Enqueueing is by request id, so every worker may do this at once.
- **Answered once.** A row already finished is skipped; riders (identical requests that
  waited for this job) are settled with a conditional update.
- **Database outages.** Each database call of a job waits an outage out (`[storage]
  outage_grace_s`), and its outcome is recorded before anyone is told (core/jobs/settle.py).
  A job that still cannot be started or settled goes back to the queue (arq's `Retry`):
  this worker neither holds it nor renews its lease any longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from arq.worker import Retry, Worker, func
from redis.exceptions import RedisError

from core.config import Config
from core.distributed.redis_queue import (
    QUEUE_NAME,
    RENDER_FUNCTION,
    JobUpdate,
    UpdateKind,
    connect,
    enqueue,
    publish,
)
from core.distributed.riders import settle_riders
from core.errors import (
    OUTAGE_RETRY_AFTER_S,
    DatabaseUnavailable,
    ShuttingDown,
    StorageUnavailable,
)
from core.jobs.cache import clip_cache
from core.jobs.dispatch import Dispatcher, Ticket
from core.jobs.events import Done, Failed, JobHandle, Progress, Started
from core.jobs.journal import Journal
from core.jobs.model_runner import ModelRunner
from core.jobs.pruning import Pruner
from core.jobs.rows import ended_row, rebuild_request, seed_of
from core.jobs.spool import DatabaseSpool
from core.models.pipeline import Pipeline
from core.records import RequestStatus
from core.storage.request_log import RequestLog

logger = logging.getLogger(__name__)

T = TypeVar("T")

POLL_DELAY_S = 0.1  # how often arq looks for jobs when idle (a cheap Redis call)
RECONNECT_S = 1.0


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RenderWorker:
    """One GPU worker: arq takes the jobs, the dispatcher batches them, rows say the rest."""

    def __init__(self, config: Config, request_log: RequestLog, *,
                 pipeline_factory: Callable[[], Pipeline], name: str | None = None,
                 journal: Journal | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        jobs = config.jobs
        self.config = config
        self.jobs = jobs
        self.name = name or default_worker_name()
        self.request_log = request_log
        self.journal = journal or Journal()  # its outcomes, told to its metrics
        self.rows = request_log.row_queue
        self.cache = clip_cache(config, request_log, shared=True, clock=clock)
        self.spool = DatabaseSpool(request_log.blobs, config.video)
        self.runner = ModelRunner(pipeline_factory, timeout_s=jobs.job_timeout_s)
        self.dispatcher = Dispatcher(jobs, request_log, self.cache, self.spool, self.runner,
                                     release=lambda _request_id: None, clock=clock,
                                     journal=self.journal, video=config.video)
        # The `sonify run` processes prune the shared log; a worker only drops its own copies
        # of the clips pruned there.
        self.pruner = Pruner(request_log, self.cache.root, config.storage.keep_days,
                             prune_database=False, clock=clock)
        self._clock = clock
        self.pool: ArqRedis | None = None
        self.arq: Worker | None = None
        self._held: set[str] = set()  # jobs whose leases this worker renews
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.taken = 0

    async def load_models(self) -> None:
        """Load the models once, before taking any job (ModelMissingError if absent)."""
        await self.runner.preload()

    async def start(self) -> None:
        """Connect, start the dispatch loop, the lease renewal and the sweep; take jobs."""
        await self.cache.start()
        self.pruner.start()
        self.pool = await connect(self.jobs.redis_url)
        self.dispatcher.start()
        render = func(self._render, name=RENDER_FUNCTION,
                      # A backstop only: the model runner times out a model call itself.
                      timeout=self.jobs.job_timeout_s * 3 + 60)
        self.arq = Worker(functions=[render], redis_pool=self.pool, queue_name=QUEUE_NAME,
                          max_jobs=self.jobs.max_batch, keep_result=0,
                          # Retries are counted in the rows (`max_tries`), not by arq.
                          max_tries=1_000_000, handle_signals=False,
                          poll_delay=POLL_DELAY_S, health_check_interval=60)
        self._tasks = [asyncio.create_task(self._take_jobs(), name="sonify-arq"),
                       asyncio.create_task(self._renew_leases(), name="sonify-leases"),
                       asyncio.create_task(self._sweep(), name="sonify-sweep")]
        logger.info("worker %s takes jobs from %s (up to %d at a time)", self.name,
                    QUEUE_NAME, self.jobs.max_batch)

    async def _take_jobs(self) -> None:
        """arq's loop, started again when Redis goes away (the sweep puts lost jobs back)."""
        assert self.arq is not None
        while not self._stopping:
            try:
                await self.arq.async_run()
                return
            except (RedisError, OSError) as exc:
                logger.warning("lost the connection to Redis (%s); trying again in %.0f s",
                               exc, RECONNECT_S)
                await asyncio.sleep(RECONNECT_S)

    async def run(self, stop: asyncio.Event) -> None:
        """Start, work until `stop` is set (or arq ends), then stop."""
        await self.start()
        waiter = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({waiter, self._tasks[0]}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            await self.stop()

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (a deadline)
        """Take no more jobs; the running batch finishes (bounded), the rest go back."""
        if self._stopping:
            return
        self._stopping = True
        if self.arq is not None:
            self.arq.allow_pick_jobs = False
        timeout = self.jobs.shutdown_timeout_s if timeout is None else timeout
        # Jobs not rendered get ShuttingDown: their renders raise Retry, arq keeps them queued.
        await self.dispatcher.stop(timeout)
        await self.pruner.stop()
        for task in self._tasks[1:]:
            task.cancel()
        if self.arq is not None:
            pending = [t for t in self.arq.tasks.values() if not t.done()]
            if pending:  # their Retry (or last row updates) reach Redis before it closes
                await asyncio.wait(pending, timeout=5.0)
            for task in self._tasks[:1]:
                task.cancel()
            with contextlib.suppress(Exception):
                await self.arq.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self.pool.aclose()
            self.pool = None
        logger.info("worker %s stopped after taking %d job(s)", self.name, self.taken)

    # one job ---------------------------------------------------------------------------------

    async def _render(self, ctx: dict[str, Any], request_id: str) -> str:
        """arq's job: render one request (with whatever else the dispatcher batches)."""
        try:
            return await self._render_one(request_id)
        except DatabaseUnavailable:
            # The request log stayed away past [storage] outage_grace_s: the job goes back to
            # the queue rather than being held here (its lease is no longer renewed).
            logger.warning("job %s goes back to the queue: the request log is unavailable",
                           request_id)
            raise Retry(defer=OUTAGE_RETRY_AFTER_S) from None

    async def _render_one(self, request_id: str) -> str:
        # Each read and write waits out a database outage (up to the grace) before giving up.
        tries = await self._patiently(f"the start of job {request_id}",
                                      lambda: self.rows.attempt(request_id, self.name))
        if tries is None:  # finished meanwhile (another worker, a duplicate enqueue)
            return "finished already"
        found = await self._patiently(f"the start of job {request_id}",
                                      lambda: self.request_log.get(request_id))
        assert found is not None
        record = found
        self.taken += 1
        logger.info("worker %s took job %s (try %d of %d, %s)", self.name, request_id, tries,
                    self.jobs.max_tries, record.platform)
        if tries > self.jobs.max_tries:
            return await self._give_up(request_id, tries)
        seed = await self._patiently(f"the seed of job {request_id}",
                                     lambda: seed_of(self.request_log, record))
        record = dataclasses.replace(record, seed=seed)
        request = await self._patiently(f"the picture of job {request_id}",
                                        lambda: rebuild_request(record, self.spool))
        if request is None or record.cache_key is None:
            # As after a restart of the local backend: it cannot be carried on.
            await self._end_alone(request_id, RequestStatus.INTERRUPTED, "interrupted")
            return "picture gone"
        try:
            await self._renew(request_id)
        except RedisError:
            # Redis went away between handing the job out and its lease: not a try. Not
            # held, so the sweep queues it again once Redis is back (arq only fails it).
            await self.rows.give_back(request_id)
            raise
        self._held.add(request_id)
        handle = JobHandle(request_id, request)
        ticket = Ticket(handle, (record.platform, record.user_id), record.created_at)
        try:
            if self.dispatcher.attach(ticket, request, seed, record.cache_key,
                                      solo=tries > 1) is None:
                handle.emit(Failed(ShuttingDown("stopping", code="shutting_down",
                                                resumes=True)))
            outcome = await self._forward(handle)
        finally:
            self._held.discard(request_id)
        if isinstance(outcome, Failed) and isinstance(outcome.error, ShuttingDown):
            # Stopping, or its outcome could not be recorded (the database stayed away):
            # the next worker takes it; this try does not count, where that can be said.
            stopping = outcome.error.code == "shutting_down"
            if not stopping:
                logger.warning("job %s goes back to the queue: its outcome could not be "
                               "recorded", request_id)
            try:
                await self.rows.give_back(request_id)
            except StorageUnavailable:
                pass  # the try stays counted: the next one renders it alone
            raise Retry(defer=0 if stopping else OUTAGE_RETRY_AFTER_S)
        await self._after(request_id)
        return outcome.__class__.__name__.lower()

    async def _patiently(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        return await self.request_log.outage.wait_out(op, what)

    async def _forward(self, handle: JobHandle) -> Done | Failed:
        """Publish the job's live updates for the adapters; returns how it ended."""
        assert self.pool is not None
        async for event in handle.events():
            if isinstance(event, Started):
                await publish(self.pool, JobUpdate(handle.id, UpdateKind.STARTED,
                                                   batch_size=event.batch_size))
            elif isinstance(event, Progress):
                await publish(self.pool, JobUpdate(handle.id, UpdateKind.PROGRESS, step=event.step,
                                                   total=event.total))
            elif isinstance(event, Done | Failed):
                return event
        raise AssertionError("a job's events end with Done or Failed")

    async def _after(self, request_id: str) -> None:
        """The row is finished: tell the adapters, settle riders, drop the picture.

        Waits a database outage out; past the grace the job stays answered (its row says so)
        and the adapters settle its riders themselves when they compare rows.
        """
        try:
            await self._patiently(f"the riders of job {request_id}",
                                  lambda: self._settle_after(request_id))
        except StorageUnavailable as exc:
            logger.warning("job %s is done, its riders and picture left to later (%s)",
                           request_id, exc)

    async def _settle_after(self, request_id: str) -> None:
        assert self.pool is not None
        record = await self.request_log.get(request_id)
        if record is None:
            return
        kind = UpdateKind.DONE if record.status == RequestStatus.DONE else UpdateKind.FAILED
        await publish(self.pool, JobUpdate(request_id, kind, code=record.reason or ""))
        for rider in await settle_riders(self.request_log, record, self._clock()):
            await publish(self.pool, JobUpdate(rider, kind, code=record.reason or ""))
            settled = await self.request_log.get(rider)
            if settled is not None:
                self.journal.record_outcome(settled)
        await self.spool.delete(request_id)

    async def _give_up(self, request_id: str, tries: int) -> str:
        logger.error("job %s was taken %d times without finishing; it fails alone",
                     request_id, tries)
        await self._end_alone(request_id, RequestStatus.FAILED, "failed")
        return "gave up"

    async def _end_alone(self, request_id: str, status: RequestStatus, code: str) -> None:
        """End a job without rendering it (its riders get the same outcome)."""
        async def fail() -> None:
            record = await self.request_log.get(request_id)
            if record is None:
                return
            changes = ended_row(status, code, created_at=record.created_at,
                                finished_at=self._clock())
            if await self.rows.finish_open([request_id], **changes):
                self.journal.record_outcome(await self.request_log.get(request_id) or record)

        await self._patiently(f"the outcome of job {request_id}", fail)
        await self._after(request_id)

    # leases and the sweep --------------------------------------------------------------------

    async def _renew(self, request_id: str) -> None:
        assert self.pool is not None
        # SET, not PEXPIRE: after Redis lost its data the key comes back, so the job that
        # the sweep enqueues again is not started twice while this worker still renders it.
        await self.pool.set(in_progress_key_prefix + request_id, b"1",
                            px=int(self.jobs.redeliver_after_s * 1000))

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.jobs.redeliver_after_s / 3)
            for request_id in list(self._held):
                try:
                    await self._renew(request_id)
                except RedisError as exc:
                    logger.warning("could not renew the lease of %s: %s", request_id, exc)

    async def _sweep(self) -> None:
        """Put rows Redis forgot back into the queue (see the module docstring)."""
        while True:
            await asyncio.sleep(self.jobs.redeliver_after_s / 2)
            try:
                await self.sweep_once()
            except StorageUnavailable:
                pass  # the database is away (logged once); the next sweep tries again
            except Exception as exc:  # Redis away for a moment
                logger.warning("the queue sweep failed (%s); trying again later", exc)

    async def sweep_once(self) -> int:
        """One sweep; returns how many jobs went back into the queue."""
        assert self.pool is not None
        older = self._clock() - self.jobs.redeliver_after_s
        requeued = 0
        for request_id, fair_round, created_at in await self.rows.stalled(older):
            if request_id in self._held:
                continue
            known = await self.pool.exists(job_key_prefix + request_id,
                                           in_progress_key_prefix + request_id)
            if not known and await enqueue(self.pool, request_id, fair_round, created_at):
                requeued += 1
        if requeued:
            logger.warning("put %d job(s) back in the queue that Redis no longer knew",
                           requeued)
        return requeued
