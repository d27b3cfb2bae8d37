"""The job engine: records requests, enforces limits, answers from the cache, recovers.

Life of a request. A request whose picture is still to be fetched is first *received*:
`receive` checks the cheap limits (per user, queue bound) and writes its row (status
``received``, with the picture's source) — the durable point — and returns a `Receipt`.
The adapter then fetches and decodes the picture and calls `submit(request, receipt=…)`
(or `refuse(receipt, error)`). A request whose content is at hand goes to `submit` at once.
`submit` serves a cached clip if there is one, else spools the image, marks the row
``queued`` and hands the job to the `Dispatcher` — which queues it fairly, or attaches it
to an identical job already in flight — and batches it for the model runner.

Semantics adapters can rely on:
- Once `receive` or `submit` has returned, the request is in the request log and will
  be answered — by this process, or after a crash through `on_received` (picture still
  to fetch) and `on_recovered` (re-run, or finished but not yet delivered).
- Every refusal `receive` or `submit` raises (BadRequest, RateLimited, QueueFull,
  ShuttingDown) is already logged as a ``rejected`` row; call `reject` only for
  refusals of your own before anything was recorded, `refuse` after `receive`.
- A request with a `dedupe_key` that was recorded before is not recorded again:
  `receive` returns a receipt marked `duplicate`, `submit` and `reject` raise
  `DuplicateRequest`; the first delivery is (or will be) answered, do nothing more.
- Rows of requests with `answer_owed` track their answer: ``owed`` until the adapter
  calls `mark_delivery(id, "sending")` before it posts and `"sent"` after. After a crash
  every row still owed or sending is handed back through `on_recovered`, with its clip
  or its failure already in the handle; one that was sending may arrive twice.
- Cache key: picture hash (or caption/prompt text) + options + models + seed. For a
  picture without an explicit seed the seed part is "auto", so the same picture
  again is a cache hit (it gets the stored clip and its seed); text jobs always key
  on their actual seed, so "another take" with a fresh seed renders anew.
- Riders (identical requests in flight) and cache hits get their own request id
  and row, with ``cache_hit`` set; cache hits carry ``batch_size`` 0. A rider that
  joins a running job is logged ``running`` at once, with a queue wait of 0.
- Cache hits count towards the hourly limit but not the concurrent one; admins
  skip both per-user limits, not the queue bound. A received request holds a user
  slot and a queue place until it is submitted or refused.
- `JobResult.files` point into the clip cache; a clip used in the last 10 minutes
  is never evicted (see core/jobs/cache.py).
- On `stop`, jobs left queued (or a batch cut short) get `Failed(ShuttingDown)`
  with ``params["resumes"] = True``: their rows stay queued/running and they are
  answered through `on_recovered` after the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from core.config import Config
from core.errors import (
    BadRequest,
    DuplicateRequest,
    GenerationFailed,
    QueueFull,
    RateLimited,
    ShuttingDown,
    UserFacingError,
)
from core.jobs.admission import Admission
from core.jobs.cache import CachedClip, ClipCache, cache_key
from core.jobs.dispatch import Dispatcher, Ticket, User
from core.jobs.events import Done, Failed, JobHandle, JobResult
from core.jobs.model_runner import ModelRunner
from core.jobs.request import JobRequest, Receipt
from core.jobs.rows import (
    failure_from_record,
    model_tag,
    new_request_id,
    placeholder_request,
    rebuild_request,
    record_for,
    result_from_record,
)
from core.jobs.spool import Spool
from core.models.pipeline import Pipeline
from core.options import check_seed
from core.storage.request_log import RequestLog, RequestRecord

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 1000
RecoveredHandler = Callable[[JobHandle], Awaitable[None]]
ReceivedHandler = Callable[[RequestRecord, Receipt], Awaitable[None]]


class JobEngine:
    """The in-process job engine: one dispatch loop, one model thread, a durable request log."""

    def __init__(self, config: Config, request_log: RequestLog, *,
                 pipeline_factory: Callable[[], Pipeline],
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.jobs = config.jobs
        self.request_log = request_log
        self._clock = clock
        self.cache = ClipCache(request_log, config.data_dir / "cache",
                               int(self.jobs.cache_max_mb * 1_000_000), clock=clock)
        self.spool = Spool(config.data_dir / "spool")
        self.runner = ModelRunner(pipeline_factory, timeout_s=self.jobs.job_timeout_s)
        self.model_tag = model_tag(config)
        self.dispatcher = Dispatcher(self.jobs, request_log, self.cache, self.spool, self.runner,
                                     release=self._release, clock=clock)
        self.admission = Admission(self.jobs, request_log, self.dispatcher, clock=clock)
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, RecoveredHandler] = {}
        self._intake_handlers: dict[str, ReceivedHandler] = {}
        self._to_recover: list[RequestRecord] = []
        self._started = False
        self._accepting = False
        self._stopped = False

    @property
    def batches(self) -> Sequence[int]:
        """Sizes of the recent batches started (tests, benches)."""
        return self.dispatcher.batches

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare the cache and spool, remember what a crash left, start the dispatch loop."""
        if self._started:
            return
        self._started = True
        await self.cache.start()
        unfinished = await self.request_log.unfinished()
        self._to_recover = [*unfinished, *await self.request_log.unanswered()]
        self.spool.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.spool.prune, {r.id for r in unfinished})
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
        await self.dispatcher.stop(timeout)

    @property
    def accepting(self) -> bool:
        return self._accepting

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
                    await asyncio.to_thread(self.spool.write, request_id, request.image)
                record = record_for(request, request_id, status="queued",
                                    created_at=self._clock(), seed=seed, cache_key=key)
                await self.request_log.insert(record)
            except BaseException:
                self._drop_hold(user, place=not rider)
                self.spool.delete(request_id)
                raise
            if not rider:
                self.admission.release_place()
        await self._queue(Ticket(handle, user, record.created_at), request, seed, key, rider)
        return handle

    async def refuse(self, receipt: Receipt, error: UserFacingError) -> None:
        """A received request cannot go on (its picture cannot be had): log it as refused.

        The adapter then tells the user why (the answer the row owes them).
        """
        record = await self.request_log.get(receipt.id)
        if record is None or record.finished:
            return
        now = self._clock()
        await self.request_log.update(receipt.id, status="rejected", reason=error.code,
                                      finished_at=now, total_s=max(0.0, now - record.created_at))
        self._drop_hold((record.platform, record.user_id))

    async def reject(self, *, platform: str, user_id: str, chat_id: str, source_kind: str,
                     error: UserFacingError, lang: str = "en",
                     dedupe_key: str | None = None) -> str:
        """Log a request refused before anything was recorded; returns the row's id.

        Raises `DuplicateRequest` when `dedupe_key` was recorded before (told already).
        """
        now = self._clock()
        request_id = new_request_id()
        await self.request_log.insert(RequestRecord(
            id=request_id, platform=platform, user_id=user_id, chat_id=chat_id,
            source_kind=source_kind, status="rejected", reason=error.code, lang=lang,
            created_at=now, finished_at=now, total_s=0.0, dedupe_key=dedupe_key))
        return request_id

    async def note_reply(self, request_id: str, **context: object) -> None:
        """Add to a request's reply context (e.g. the status message shown), for restarts."""
        await self.request_log.merge_reply_context(request_id, dict(context))

    async def mark_delivery(self, request_id: str, state: str) -> None:
        """How far a request's answer got: "sending" before posting it, "sent" after."""
        await self.request_log.set_delivery(request_id, state)

    def on_recovered(self, platform: str, handler: RecoveredHandler) -> None:
        """Register who answers this platform's jobs after a crash (re-run, or finished and
        not yet delivered: the handle holds the outcome already)."""
        self._handlers[platform] = handler

    def on_received(self, platform: str, handler: ReceivedHandler) -> None:
        """Register who fetches the pictures of this platform's received rows after a crash."""
        self._intake_handlers[platform] = handler

    async def resume_recovered(self) -> int:
        """Take up what a crash left; returns how many requests were handed to adapters."""
        records, self._to_recover = self._to_recover, []
        handed = 0
        for record in records:
            handed += await self._resume(record)
        if records:
            logger.warning("took up %d request(s) left by the last run", len(records))
        return handed

    async def get_request(self, request_id: str) -> RequestRecord | None:
        return await self.request_log.get(request_id)

    # submission helpers --------------------------------------------------------------------

    async def _checked_seed(self, request: JobRequest) -> int:
        """The request's seed (drawn if absent), after the refusals that need no lookup."""
        seed: int | None = None
        try:
            if not self._accepting:
                raise ShuttingDown("the service is stopping")
            seed = check_seed(request.seed)
            self._validate(request)
        except (ShuttingDown, BadRequest) as exc:
            await self._log_rejection(request, exc, seed)
            raise
        return seed

    async def _submit_received(self, request: JobRequest, receipt: Receipt) -> JobHandle:
        user: User = (request.platform, request.user_id)
        handle = JobHandle(receipt.id, request)
        try:
            self._validate(request)
            if not request.content_at_hand:
                raise BadRequest("the picture was not fetched", code="bad_option")
            key = self._key_for(request, receipt.seed)
            hit = await self.cache.lookup(key)
            if hit is not None:
                await self.request_log.update(receipt.id, status="queued", cache_key=key,
                                              image_sha256=_sha(request))
                await self._finish_from_cache(handle, request, receipt.seed, hit,
                                              receipt.created_at)
                self._drop_hold(user)
                return handle
            rider = self.dispatcher.rideable(key) is not None
            if request.image is not None:
                await asyncio.to_thread(self.spool.write, receipt.id, request.image)
            await self.request_log.update(receipt.id, status="queued", cache_key=key,
                                          image_sha256=_sha(request), caption=request.caption,
                                          prompt=request.prompt)
        except Exception as exc:
            error = exc if isinstance(exc, UserFacingError) else GenerationFailed(
                "could not queue the job")
            logger.log(logging.INFO if isinstance(exc, UserFacingError) else logging.ERROR,
                       "received request %s cannot be queued: %s", receipt.id, exc,
                       exc_info=not isinstance(exc, UserFacingError))
            await self.refuse(receipt, error)
            raise error from None
        self.admission.release_place()  # from here the job is in the queue (or rides one)
        await self._queue(Ticket(handle, user, receipt.created_at), request, receipt.seed, key,
                          rider)
        return handle

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

    def _validate(self, request: JobRequest) -> None:
        request.options.check(self.config.generation)
        if request.image is not None or request.source is not None:
            return
        text = request.caption if request.caption is not None else request.prompt
        if not text or not text.strip() or len(text) > MAX_TEXT_CHARS:
            raise BadRequest(f"text must be 1 to {MAX_TEXT_CHARS} characters")

    def _key_for(self, request: JobRequest, seed: int) -> str:
        if request.image is not None:
            # A drawn seed is random: a repeated picture with no seed given is still a hit.
            return cache_key(model_tag=self.model_tag, options=request.options,
                             image_sha256=request.image.sha256,
                             seed=request.seed if request.seed is not None else "auto")
        return cache_key(model_tag=self.model_tag, options=request.options,
                         caption=request.caption, prompt=request.prompt, seed=seed)

    async def _log_rejection(self, request: JobRequest, error: UserFacingError,
                             seed: int | None) -> None:
        """A refused request's row: everything known about it, nothing to answer later.

        Raises `DuplicateRequest` for a redelivered request refused before: told already.
        """
        try:
            await self.request_log.insert(record_for(
                request, new_request_id(), status="rejected", created_at=self._clock(),
                seed=seed, reason=error.code))
        except DuplicateRequest:
            raise
        except Exception:  # the refusal itself must still reach the user
            logger.exception("could not log a rejected request")

    async def _answer_from_cache(self, request_id: str, request: JobRequest, seed: int, key: str,
                                 hit: CachedClip) -> JobHandle:
        handle = JobHandle(request_id, request)
        now = self._clock()
        await self.request_log.insert(record_for(request, request_id, status="queued",
                                                 created_at=now, seed=seed, cache_key=key))
        await self._finish_from_cache(handle, request, seed, hit, now)
        return handle

    async def _finish_from_cache(self, handle: JobHandle, request: JobRequest, seed: int,
                                 hit: CachedClip, created_at: float) -> None:
        now = self._clock()
        timings = {"queue_wait_s": 0.0, "caption_s": 0.0, "sound_s": 0.0, "encode_s": 0.0,
                   "total_s": max(0.0, now - created_at)}
        await self.request_log.update(
            handle.id, status="done", caption=hit.caption, prompt=hit.prompt, seed=hit.seed,
            cache_hit=True, batch_size=0, duration_s=hit.duration_s, started_at=now,
            finished_at=now, files={k: str(v) for k, v in hit.files.items()}, **timings)
        self.spool.delete(handle.id)
        handle.emit(Done(JobResult(request_id=handle.id, caption=hit.caption, prompt=hit.prompt,
                                   seed=hit.seed, duration_s=hit.duration_s,
                                   files=dict(hit.files), cache_hit=True, batch_size=0,
                                   timings=timings)))

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
            result = result_from_record(record) if record.status == "done" else None
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
        request = (await asyncio.to_thread(rebuild_request, record, self.spool.read)
                   if handler else None)
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

    async def _interrupt(self, record: RequestRecord, handler: RecoveredHandler | None) -> None:
        now = self._clock()
        await self.request_log.update(record.id, status="interrupted", reason="interrupted",
                                      finished_at=now, total_s=max(0.0, now - record.created_at))
        self.spool.delete(record.id)
        if handler is None:
            logger.warning("request %s (%s) was interrupted and no adapter takes it",
                           record.id, record.platform)
            return
        handle = JobHandle(record.id, placeholder_request(record))
        handle.emit(Failed(GenerationFailed("interrupted by a restart", code="interrupted")))
        self._run_handler(handler(handle), record.id)

    def _run_handler(self, work: Awaitable[None], request_id: str) -> None:
        """Run an adapter's recovery handler in the background; its failure is only logged."""

        async def call() -> None:
            try:
                await work
            except Exception:
                logger.exception("recovery handler failed for %s", request_id)

        task = asyncio.create_task(call())
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)


def _sha(request: JobRequest) -> str | None:
    return request.image.sha256 if request.image is not None else None
