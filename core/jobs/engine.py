"""The job engine: accepts jobs, enforces limits, answers from the cache, recovers after a crash.

Life of a job: `submit` checks the per-user limits and the queue bound, serves a
cached clip at once if there is one, else spools the image, writes the request
row (status ``queued``) and hands the job to the `Dispatcher` — which queues it
fairly, or attaches it to an identical job already in flight so both are answered
from one computation — and batches it for the model runner (core/jobs/dispatch.py).

Semantics adapters can rely on:
- Every refusal `submit` raises (BadRequest, RateLimited, QueueFull, ShuttingDown) is
  already logged as a ``rejected`` row; call `reject` only for refusals of your own
  (an image that cannot be read, a command without a picture).
- Cache key: picture hash (or caption/prompt text) + options + models + seed. For a
  picture without an explicit seed the seed part is "auto", so the same picture
  again is a cache hit (it gets the stored clip and its seed); text jobs always key
  on their actual seed, so "another take" with a fresh seed renders anew.
- Riders (identical requests in flight) and cache hits get their own request id
  and row, with ``cache_hit`` set; cache hits carry ``batch_size`` 0. A rider that
  joins a running job is logged ``running`` at once, with a queue wait of 0.
- Cache hits count towards the hourly limit but not the concurrent one; admins
  skip both per-user limits, not the queue bound.
- `JobResult.files` point into the clip cache; a clip used in the last 10 minutes
  is never evicted (see core/cache.py).
- On `stop`, jobs left queued (or a batch cut short) get `Failed(ShuttingDown)`
  with ``params["resumes"] = True``: their rows stay queued/running and they are
  answered through `on_recovered` after the next start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict

from core.config import Config
from core.errors import (
    BadRequest,
    GenerationFailed,
    QueueFull,
    RateLimited,
    ShuttingDown,
    UserFacingError,
)
from core.jobs.cache import CachedClip, ClipCache, cache_key
from core.jobs.dispatch import Dispatcher, Ticket, User
from core.jobs.events import Done, Failed, JobHandle, JobResult
from core.jobs.model_runner import ModelRunner
from core.jobs.request import JobRequest
from core.jobs.spool import Spool, placeholder_request, rebuild_request
from core.models.pipeline import Pipeline
from core.options import check_seed
from core.storage.request_log import RequestLog, RequestRecord

logger = logging.getLogger(__name__)

HOUR_S = 3600.0
MAX_TEXT_CHARS = 1000
RecoveredHandler = Callable[[JobHandle], Awaitable[None]]


def new_request_id() -> str:
    """12 URL-safe characters: fits Telegram callback_data and Discord custom_ids."""
    return secrets.token_urlsafe(9)


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
        self.model_tag = _model_tag(config)
        self.dispatcher = Dispatcher(self.jobs, request_log, self.cache, self.spool, self.runner,
                                     release=self._release, clock=clock)
        self._active: dict[User, int] = {}
        # Weak: a user's lock lives while a submission holds or awaits it.
        self._user_locks: weakref.WeakValueDictionary[User, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._reserved = 0  # queue places promised to submissions still writing their row
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, RecoveredHandler] = {}
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
        """Prepare the cache and spool, remember unfinished jobs, start the dispatch loop."""
        if self._started:
            return
        self._started = True
        await self.cache.start()
        self._to_recover = await self.request_log.unfinished()
        self.spool.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.spool.prune, {r.id for r in self._to_recover})
        if self._to_recover:
            logger.warning("%d request(s) were left unfinished; resume_recovered() re-runs them",
                           len(self._to_recover))
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
        return len(self.dispatcher.queue)

    # adapter API ---------------------------------------------------------------------------

    async def submit(self, request: JobRequest) -> JobHandle:
        """Accept a job (its row is written first) or raise a `UserFacingError`."""
        user: User = (request.platform, request.user_id)
        seed: int | None = None
        try:
            if not self._accepting:
                raise ShuttingDown("the service is stopping")
            seed = check_seed(request.seed)
            self._validate(request)
        except (ShuttingDown, BadRequest) as exc:
            await self._log_rejection(request, exc, seed)
            raise
        key = self._key_for(request, seed)
        async with self._lock_for(user):
            try:
                if not request.is_admin:
                    await self._check_hourly(user)
                hit = await self.cache.lookup(key)
                rider = hit is None and self.dispatcher.rideable(key) is not None
                if hit is None:
                    if not request.is_admin:
                        self._check_running(user)
                    if not rider:
                        self._check_capacity()
            except (RateLimited, QueueFull) as exc:
                await self._log_rejection(request, exc, seed)
                raise
            request_id = new_request_id()
            if hit is not None:
                return await self._answer_from_cache(request_id, request, seed, key, hit)
            self._active[user] = self._active.get(user, 0) + 1
            self._reserved += 0 if rider else 1
            handle = JobHandle(request_id, request)
            try:
                if request.image is not None:
                    await asyncio.to_thread(self.spool.write, request_id, request.image)
                record = self._record(request_id, request, seed, key, "queued")
                created = record.created_at
                await self.request_log.insert(record)
            except BaseException:
                self._release(user)
                self._reserved -= 0 if rider else 1
                self.spool.delete(request_id)
                raise
        self._reserved -= 0 if rider else 1
        if rider and self.dispatcher.rideable(key) is None:
            # The job it meant to ride finished while its row was written: its clip is cached.
            hit = await self.cache.lookup(key)
            if hit is not None:
                self._release(user)
                await self._finish_from_cache(handle, request, seed, hit, created)
                return handle
        await self._attach(Ticket(handle, user, created), request, seed, key)
        return handle

    async def reject(self, *, platform: str, user_id: str, chat_id: str, source_kind: str,
                     error: UserFacingError, lang: str = "en") -> str:
        """Log a request refused before it became a job; returns the row's id."""
        now = self._clock()
        request_id = new_request_id()
        await self.request_log.insert(RequestRecord(
            id=request_id, platform=platform, user_id=user_id, chat_id=chat_id,
            source_kind=source_kind, status="rejected", reason=error.code, lang=lang,
            created_at=now, finished_at=now, total_s=0.0))
        return request_id

    def on_recovered(self, platform: str, handler: RecoveredHandler) -> None:
        """Register who answers this platform's jobs re-run (or interrupted) after a crash."""
        self._handlers[platform] = handler

    async def resume_recovered(self) -> int:
        """Re-run jobs a crash left unfinished; returns how many were handed to adapters."""
        records, self._to_recover = self._to_recover, []
        handed = 0
        for record in records:
            handler = self._handlers.get(record.platform)
            request = (await asyncio.to_thread(rebuild_request, record, self.spool)
                       if handler else None)
            if handler is None or request is None:
                await self._interrupt(record, handler)
                handed += handler is not None
                continue
            user: User = (record.platform, record.user_id)
            handle = JobHandle(record.id, request)
            seed = record.seed if record.seed is not None else check_seed(None)
            key = record.cache_key or self._key_for(request, seed)
            hit = await self.cache.lookup(key)
            if hit is not None:
                await self._finish_from_cache(handle, request, seed, hit, record.created_at)
            else:
                await self.request_log.update(record.id, status="queued", started_at=None)
                self._active[user] = self._active.get(user, 0) + 1
                await self._attach(Ticket(handle, user, record.created_at), request, seed, key)
            self._call_handler(handler, handle)
            handed += 1
        if records:
            logger.warning("recovered %d unfinished request(s)", len(records))
        return handed

    async def get_request(self, request_id: str) -> RequestRecord | None:
        return await self.request_log.get(request_id)

    # submission helpers --------------------------------------------------------------------

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
        text = request.caption if request.caption is not None else request.prompt
        if request.image is None and (not text or not text.strip() or len(text) > MAX_TEXT_CHARS):
            raise BadRequest("text must be 1 to 1000 characters")

    def _key_for(self, request: JobRequest, seed: int) -> str:
        if request.image is not None:
            # A drawn seed is random: a repeated picture with no seed given is still a hit.
            return cache_key(model_tag=self.model_tag, options=request.options,
                             image_sha256=request.image.sha256,
                             seed=request.seed if request.seed is not None else "auto")
        return cache_key(model_tag=self.model_tag, options=request.options,
                         caption=request.caption, prompt=request.prompt, seed=seed)

    def _lock_for(self, user: User) -> asyncio.Lock:
        lock = self._user_locks.get(user)
        if lock is None:
            lock = asyncio.Lock()
            self._user_locks[user] = lock
        return lock

    async def _check_hourly(self, user: User) -> None:
        now = self._clock()
        count, oldest = await self.request_log.user_window(user[0], user[1], now - HOUR_S)
        if count >= self.jobs.per_user_per_hour:
            wait = (oldest or now) + HOUR_S - now
            raise RateLimited("hourly limit reached", code="hourly_limit",
                              retry_after_s=max(1, math.ceil(wait)))

    def _check_running(self, user: User) -> None:
        if self._active.get(user, 0) >= self.jobs.per_user_concurrent:
            raise RateLimited("too many requests running", code="too_many_running",
                              retry_after_s=self.dispatcher.estimate_user_wait(user))

    def _check_capacity(self) -> None:
        if self.queue_length() + self._reserved >= self.jobs.max_queue:
            raise QueueFull("queue full", code="busy",
                            retry_after_s=self.dispatcher.estimate_drain())

    def _record(self, request_id: str, request: JobRequest, seed: int | None, key: str | None,
                status: str, *, reason: str | None = None) -> RequestRecord:
        return RequestRecord(
            id=request_id, platform=request.platform, user_id=request.user_id,
            chat_id=request.chat_id, source_kind=request.source_kind, status=status,
            created_at=self._clock(), is_admin=request.is_admin,
            image_sha256=request.image.sha256 if request.image is not None else None,
            caption=request.caption, prompt=request.prompt,
            options=request.options.to_dict(), seed=seed, lang=request.lang,
            reply_context=dict(request.reply_context), cache_key=key, reason=reason)

    async def _log_rejection(self, request: JobRequest, error: UserFacingError,
                             seed: int | None) -> None:
        """A refused submission's row: everything known about the request, no answer data."""
        try:
            record = self._record(new_request_id(), request, seed, None, "rejected",
                                  reason=error.code)
            record.finished_at, record.total_s = record.created_at, 0.0
            record.reply_context = {}
            await self.request_log.insert(record)
        except Exception:  # the refusal itself must still reach the user
            logger.exception("could not log a rejected request")

    async def _answer_from_cache(self, request_id: str, request: JobRequest, seed: int, key: str,
                                 hit: CachedClip) -> JobHandle:
        handle = JobHandle(request_id, request)
        now = self._clock()
        await self.request_log.insert(self._record(request_id, request, seed, key, "queued"))
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
        left = self._active.get(user, 0) - 1
        if left > 0:
            self._active[user] = left
        else:
            self._active.pop(user, None)

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
        self._call_handler(handler, handle)

    def _call_handler(self, handler: RecoveredHandler, handle: JobHandle) -> None:
        async def call() -> None:
            try:
                await handler(handle)
            except Exception:
                logger.exception("recovery handler failed for %s", handle.id)

        task = asyncio.create_task(call())
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)


def _model_tag(config: Config) -> str:
    """What else decides a clip: the models, the device and the caption/prompt settings."""
    gen = config.generation
    parts = {"models": asdict(config.models),
             "template": gen.prompt_template, "beams": gen.caption_beams,
             "tokens": gen.caption_max_tokens}
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

