"""The in-process job engine: one dispatch loop, one model thread, a durable request log.

This is the `JobEngine` of one process (see core/jobs/contract.py for the life of a
request and the semantics every backend keeps). Limits are counted here, the clip cache
and the spool are this machine's, and the model runner renders in this process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from core.config import Config
from core.errors import (
    BadRequest,
    DuplicateRequest,
    QueueFull,
    RateLimited,
    StorageUnavailable,
    UserFacingError,
)
from core.jobs.admission import Admission
from core.jobs.base import EngineBase
from core.jobs.cache import CachedClip, ClipCache
from core.jobs.dispatch import Dispatcher, Ticket, User
from core.jobs.events import Done, Failed, JobHandle
from core.jobs.model_runner import ModelRunner
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
from core.jobs.spool import FileSpool
from core.models.pipeline import Pipeline
from core.options import check_seed
from core.storage.request_log import RequestLog, RequestRecord

logger = logging.getLogger(__name__)


class LocalJobEngine(EngineBase):
    """The embedded backend: everything in this process."""

    def __init__(self, config: Config, request_log: RequestLog, *,
                 pipeline_factory: Callable[[], Pipeline],
                 clock: Callable[[], float] = time.time) -> None:
        jobs = config.jobs
        cache = ClipCache(request_log, config.data_dir / "cache",
                          int(jobs.cache_max_mb * 1_000_000), clock=clock)
        super().__init__(config, request_log, cache,
                         FileSpool(config.data_dir / "spool", config.video), clock=clock)
        self.runner = ModelRunner(pipeline_factory, timeout_s=jobs.job_timeout_s)
        self.dispatcher = Dispatcher(jobs, request_log, self.cache, self.spool, self.runner,
                                     release=self._release, clock=clock, video=config.video)
        self.admission = Admission(jobs, request_log, self.dispatcher, clock=clock)
        self._started = False
        self._stopped = False

    @property
    def batches(self) -> Sequence[int]:
        """Sizes of the recent batches started (tests, benches)."""
        return self.dispatcher.batches

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the request log's lease (RequestLogInUse when another process holds it),
        prepare the cache and spool, remember what a crash left, start the dispatch loop."""
        if self._started:
            return
        # Before anything is read: the rows left unfinished are this process's to take up
        # only if no other process is answering them right now.
        await self.request_log.take_lease()
        try:
            await self.cache.start()
            unfinished = await self.request_log.unfinished()
            self._to_recover = [*unfinished, *await self.request_log.unanswered()]
            await self.spool.prune({r.id for r in unfinished})
        except BaseException:
            await self.request_log.release_lease()
            raise
        self._started = True
        if self._to_recover:
            logger.warning("%d request(s) were left unanswered; resume_recovered() takes "
                           "them up", len(self._to_recover))
        self._accepting = True
        self.dispatcher.start()

    async def load_models(self) -> None:
        """Load the models before serving (ModelMissingError if they are not available)."""
        await self.runner.preload()

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (contract)
        """Refuse new jobs, let the running batch finish (bounded), keep the rest queued."""
        if self._stopped:
            return
        self._stopped = True
        self._accepting = False
        timeout = self.jobs.shutdown_timeout_s if timeout is None else timeout
        # The lease stays until the request log is closed: answers still being delivered
        # after this are this process's, not a next one's to send again.
        await self.dispatcher.stop(timeout)

    def queue_length(self) -> int:
        """Jobs waiting for the model runner (not counting the batch that is running)."""
        return self.admission.queue_length()

    # adapter API ---------------------------------------------------------------------------

    async def receive(self, request: JobRequest) -> Receipt:
        """Record a request whose picture is still to be fetched (the durable point).

        Raises the refusal (already logged) when a limit says no; returns a duplicate
        receipt for a `dedupe_key` seen before.
        """
        if request.source is None or request.content_at_hand:
            raise ValueError("receive() takes a request with a source and no content")
        user: User = (request.platform, request.user_id)
        seed = await self._checked_seed(request)
        async with self.admission.lock_for(user):
            if request.dedupe_key is not None:
                existing = await self.request_log.find_dedupe(request.dedupe_key)
                if existing is not None:
                    known = existing.seed if existing.seed is not None else seed
                    return Receipt(existing.id, existing.created_at, known, duplicate=True)
            try:
                if not request.is_admin:
                    await self.admission.check_hourly(user)
                    if not request.extra_picture:
                        self.admission.check_running(user)
                self.admission.check_capacity()
            except (RateLimited, QueueFull) as exc:
                await self._log_rejection(request, exc, seed)
                raise
            request_id = new_request_id()
            record = record_for(request, request_id, status="received",
                                created_at=self._clock(), seed=seed)
            self.admission.hold(user, place=True)
            try:
                await self.request_log.insert(record)
            except DuplicateRequest as dup:  # recorded meanwhile by another process
                self._drop_hold(user)
                return Receipt(dup.request_id, dup.created_at, seed, duplicate=True)
            except BaseException:
                self._drop_hold(user)
                raise
        return Receipt(request_id, record.created_at, seed)

    async def submit(self, request: JobRequest, *, receipt: Receipt | None = None) -> JobHandle:
        """Queue a job whose content is at hand; with `receipt`, the one `receive` recorded.

        Without a receipt its row is written first; refusals are logged and raised.
        """
        request = self._fitted(request)
        if receipt is not None:
            return await self._submit_received(request, receipt)
        user: User = (request.platform, request.user_id)
        seed = await self._checked_seed(request)
        key = self._key_for(request, seed)
        async with self.admission.lock_for(user):
            try:
                if not request.is_admin:
                    await self.admission.check_hourly(user)
                hit = await self.cache.lookup(key)
                rider = hit is None and self.dispatcher.rideable(key) is not None
                if hit is None:
                    if not (request.is_admin or request.extra_picture):
                        self.admission.check_running(user)
                    if not rider:
                        self.admission.check_capacity()
            except (RateLimited, QueueFull) as exc:
                await self._log_rejection(request, exc, seed)
                raise
            request_id = new_request_id()
            if hit is not None:
                return await self._answer_from_cache(request_id, request, seed, key, hit)
            self.admission.hold(user, place=not rider)
            handle = JobHandle(request_id, request)
            try:
                if request.image is not None:
                    await self.spool.write(request_id, request.image)
                record = record_for(request, request_id, status="queued",
                                    created_at=self._clock(), seed=seed, cache_key=key)
                await self.request_log.insert(record)
            except BaseException:
                self._drop_hold(user, place=not rider)
                await self.spool.delete(request_id)
                raise
            if not rider:
                self.admission.release_place()
        await self._queue(Ticket(handle, user, record.created_at), request, seed, key, rider)
        return handle

    async def follow(self, request_id: str) -> JobHandle | None:
        """One process is the whole service: every job it follows is its own."""
        return None

    async def refuse(self, receipt: Receipt, error: UserFacingError) -> None:
        record = await self._end_refused(receipt, error)
        if record is not None:
            self._drop_hold((record.platform, record.user_id))

    # submission helpers --------------------------------------------------------------------

    async def _submit_received(self, request: JobRequest, receipt: Receipt) -> JobHandle:
        user: User = (request.platform, request.user_id)
        handle = JobHandle(receipt.id, request)
        try:
            self._validate(request)
            if not request.content_at_hand:
                raise BadRequest("the picture was not fetched", code="bad_option")
            key = self._key_for(request, receipt.seed)
            # The request is recorded already: a database outage is waited out, not failed.
            hit = await self._patiently(f"queueing request {receipt.id}",
                                        lambda: self._queue_received(request, receipt, key))
        except Exception as exc:
            error = await self._cannot_queue(receipt, exc)
            if isinstance(error, StorageUnavailable):  # its row waits for the next start
                self._drop_hold(user)
            raise error from None
        if hit is not None:
            try:
                await self._finish_from_cache(handle, request, receipt.seed, hit,
                                              receipt.created_at)
            finally:
                self._drop_hold(user)
            return handle
        rider = self.dispatcher.rideable(key) is not None
        self.admission.release_place()  # from here the job is in the queue (or rides one)
        await self._queue(Ticket(handle, user, receipt.created_at), request, receipt.seed, key,
                          rider)
        return handle

    async def _queue_received(self, request: JobRequest, receipt: Receipt,
                              key: str) -> CachedClip | None:
        """Mark a received row queued (its picture spooled first), or find its clip cached."""
        hit = await self.cache.lookup(key)
        if hit is not None:
            await self.request_log.update(receipt.id, status="queued", cache_key=key,
                                          image_sha256=image_sha(request),
                                          **video_columns(request))
            return hit
        if request.image is not None:
            await self.spool.write(receipt.id, request.image)
        await self.request_log.update(receipt.id, status="queued", cache_key=key,
                                      image_sha256=image_sha(request), caption=request.caption,
                                      prompt=request.prompt, **video_columns(request))
        return None

    async def _queue(self, ticket: Ticket, request: JobRequest, seed: int, key: str,
                     rider: bool) -> None:
        if rider and self.dispatcher.rideable(key) is None:
            # The job it meant to ride finished while its row was written: its clip is cached.
            hit = await self.cache.lookup(key)
            if hit is not None:
                self._release(ticket.user)
                await self._finish_from_cache(ticket.handle, request, seed, hit,
                                              ticket.created_at)
                return
        await self._attach(ticket, request, seed, key)

    async def _attach(self, ticket: Ticket, request: JobRequest, seed: int, key: str) -> None:
        """Hand a logged job to the dispatcher; a rider of a running job is logged as running."""
        job = self.dispatcher.attach(ticket, request, seed, key)
        if job is None or job.started_at is None or job.tickets[0] is ticket:
            return
        started = max(job.started_at, ticket.created_at)
        try:  # its batch was marked before it joined: say it is being computed now
            await self.request_log.mark_started([ticket.handle.id], started, job.batch_size)
        except Exception:  # the job runs regardless; only the interim status is stale
            logger.exception("could not mark %s as running", ticket.handle.id)

    async def _answer_from_cache(self, request_id: str, request: JobRequest, seed: int, key: str,
                                 hit: CachedClip) -> JobHandle:
        handle = JobHandle(request_id, request)
        now = self._clock()
        await self.request_log.insert(record_for(request, request_id, status="queued",
                                                 created_at=now, seed=seed, cache_key=key))
        await self._finish_from_cache(handle, request, seed, hit, now)
        return handle

    def _release(self, user: User) -> None:
        self.admission.release(user)

    def _drop_hold(self, user: User, *, place: bool = True) -> None:
        """Undo `Admission.hold` for a request that will not be queued."""
        if place:
            self.admission.release_place()
        self.admission.release(user)

    # after a crash -------------------------------------------------------------------------

    async def _resume(self, record: RequestRecord) -> int:
        """Take up one row left by the last run; 1 if an adapter was handed it."""
        user: User = (record.platform, record.user_id)
        handler = self._handlers.get(record.platform)
        if record.finished:  # its answer is owed: hand over the outcome to deliver
            if handler is None:
                return 0
            files = await self.clip_files(record) if record.status == "done" else None
            result = result_from_record(record, files) if files is not None else None
            if record.status != "done" or result is not None:
                handle = JobHandle(record.id, placeholder_request(record))
                handle.emit(Done(result) if result is not None
                            else Failed(failure_from_record(record)))
                self._run_handler(handler(handle), record.id)
                return 1
            # A done row whose clip is gone: render it again from its caption and seed.
        if record.status == "received" and not (record.caption or record.prompt):
            intake = self._intake_handlers.get(record.platform)
            if intake is None or record.source is None:
                await self._interrupt(record, handler)
                return int(handler is not None)
            self.admission.hold(user, place=True)
            seed = record.seed if record.seed is not None else check_seed(None)
            receipt = Receipt(record.id, record.created_at, seed)
            self._run_handler(intake(record, receipt), record.id)
            return 1
        request = await rebuild_request(record, self.spool) if handler else None
        if request is not None:
            request = self._fitted(request)
        if handler is None or request is None:
            await self._interrupt(record, handler)
            return int(handler is not None)
        handle = JobHandle(record.id, request)
        seed = record.seed if record.seed is not None else check_seed(None)
        # The key stored at submission: a picture's drawn seed is in the row, not in its key.
        key = record.cache_key or self._key_for(request, seed)
        hit = await self.cache.lookup(key)
        if hit is not None:
            await self._finish_from_cache(handle, request, seed, hit, record.created_at)
        else:
            await self.request_log.update(record.id, status="queued", started_at=None,
                                          cache_key=key)
            self.admission.hold(user, place=False)
            await self._attach(Ticket(handle, user, record.created_at), request, seed, key)
        self._run_handler(handler(handle), record.id)
        return 1

def _sha(request: JobRequest) -> str | None:
    return request.image.sha256 if request.image is not None else None
