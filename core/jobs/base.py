"""What both job engines do the same way: refusals, rows, the clip cache, recovery handlers.

`LocalJobEngine` (core/jobs/engine.py) and `RedisJobEngine` (core/distributed/engine.py)
differ in where jobs wait, who renders them and where the limits are counted; everything
about a request's row — and the semantics in core/jobs/contract.py — is kept here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from core.config import Config
from core.errors import (
    BadRequest,
    DuplicateRequest,
    GenerationFailed,
    ShuttingDown,
    StorageUnavailable,
    UserFacingError,
)
from core.jobs.cache import CachedClip, ClipCache, cache_key
from core.jobs.contract import ReceivedHandler, RecoveredHandler
from core.jobs.events import Done, Failed, JobHandle, JobResult
from core.jobs.journal import log_outcome, log_request_outcome
from core.jobs.request import JobRequest, Receipt
from core.jobs.rows import model_tag, new_request_id, placeholder_request, record_for
from core.jobs.spool import Spool
from core.jobs.video_jobs import answer_shape, fitted_to_video
from core.options import check_seed
from core.storage.request_log import RequestLog, RequestRecord
from core.user_text import check_words

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 1000
T = TypeVar("T")


class EngineBase:
    """The request-log side of a job engine (see `JobEngine` in core/jobs/contract.py)."""

    def __init__(self, config: Config, request_log: RequestLog, cache: ClipCache, spool: Spool,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.jobs = config.jobs
        self.request_log = request_log
        self.cache = cache
        self.spool = spool
        self.model_tag = model_tag(config)
        self._clock = clock
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, RecoveredHandler] = {}
        self._intake_handlers: dict[str, ReceivedHandler] = {}
        self._to_recover: list[RequestRecord] = []  # rows the last run left, for `resume`
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def _patiently(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """`op()` on a request that is recorded already: a database outage is waited out
        (up to `[storage] outage_grace_s`, then DatabaseUnavailable)."""
        return await self.request_log.outage.wait_out(op, what)

    async def reject(self, *, platform: str, user_id: str, chat_id: str, source_kind: str,
                     error: UserFacingError, lang: str = "en",
                     dedupe_key: str | None = None) -> str:
        """Log a request refused before anything was recorded; returns the row's id.

        Raises `DuplicateRequest` when `dedupe_key` was recorded before (told already).
        """
        now = self._clock()
        request_id, times = await self.request_log.record_refusal(RequestRecord(
            id=new_request_id(), platform=platform, user_id=user_id, chat_id=chat_id,
            source_kind=source_kind, status="rejected", reason=error.code, lang=lang,
            created_at=now, finished_at=now, total_s=0.0, dedupe_key=dedupe_key))
        log_outcome(request_id, f"{platform}:{user_id}", source_kind, "rejected",
                    reason=error.code, times=times)
        return request_id

    async def refuse(self, receipt: Receipt, error: UserFacingError) -> None:
        """A received request cannot go on (its picture cannot be had): log it as refused.

        The adapter then tells the user why (the answer the row owes them).
        """
        await self._end_refused(receipt, error)

    async def _end_refused(self, receipt: Receipt, error: UserFacingError
                           ) -> RequestRecord | None:
        """End a received row as refused; the row, or None if it had ended already."""
        record = await self._patiently(f"the refusal of {receipt.id}",
                                       lambda: self.request_log.get(receipt.id))
        if record is None or record.finished:
            return None
        now = self._clock()
        await self._patiently(f"the refusal of {receipt.id}", lambda: self.request_log.update(
            receipt.id, status="rejected", reason=error.code, finished_at=now,
            total_s=max(0.0, now - record.created_at)))
        log_outcome(record.id, f"{record.platform}:{record.user_id}", record.source_kind,
                    "rejected", reason=error.code, total_s=max(0.0, now - record.created_at))
        return record

    async def _cannot_queue(self, receipt: Receipt, exc: Exception) -> Exception:
        """A recorded request that could not be queued: refused; the error to raise.

        One that could not be queued because the request log stayed away (past the grace)
        cannot be refused either: its row stays received, and the next start carries it on.
        """
        if isinstance(exc, StorageUnavailable):
            logger.warning("request %s is left for the next start: %s", receipt.id, exc)
            return exc
        error = exc if isinstance(exc, UserFacingError) else GenerationFailed(
            "could not queue the job")
        logger.log(logging.INFO if isinstance(exc, UserFacingError) else logging.ERROR,
                   "request %s cannot be queued: %s", receipt.id, exc,
                   exc_info=not isinstance(exc, UserFacingError))
        await self.refuse(receipt, error)
        return error

    async def resume_recovered(self) -> int:
        """Take up what the last run left; returns how many requests were handed to adapters."""
        records, self._to_recover = self._to_recover, []
        handed = 0
        for record in records:
            handed += await self._resume(record)
        if records:
            logger.warning("took up %d request(s) left by the last run", len(records))
        return handed

    async def _resume(self, record: RequestRecord) -> int:
        """Take up one row left by the last run; 1 if an adapter was handed it."""
        raise NotImplementedError

    async def note_reply(self, request_id: str, **context: object) -> None:
        """Add to a request's reply context (e.g. the status message shown), for restarts."""
        await self._patiently(f"the reply context of {request_id}",
                              lambda: self.request_log.merge_reply_context(request_id,
                                                                           dict(context)))

    async def mark_delivery(self, request_id: str, state: str) -> None:
        """How far a request's answer got: "sending" before posting it, "sent" after."""
        await self._patiently(f"the delivery of {request_id}",
                              lambda: self.request_log.set_delivery(request_id, state))

    def on_recovered(self, platform: str, handler: RecoveredHandler) -> None:
        """Register who answers this platform's jobs after a crash (re-run, or finished and
        not yet delivered: the handle holds the outcome already)."""
        self._handlers[platform] = handler

    def on_received(self, platform: str, handler: ReceivedHandler) -> None:
        """Register who fetches the pictures of this platform's received rows after a crash."""
        self._intake_handlers[platform] = handler

    async def get_request(self, request_id: str) -> RequestRecord | None:
        return await self.request_log.get(request_id)

    async def clip_files(self, record: RequestRecord) -> dict[str, Path] | None:
        """A done request's clip files on this machine, by format (None when gone)."""
        return await self.cache.local_files(record.files or {})

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

    def _validate(self, request: JobRequest) -> None:
        request.options.check(self.config.generation)
        if request.image is not None or request.source is not None:
            return
        text = request.caption if request.caption is not None else request.prompt
        if not text or not text.strip() or len(text) > MAX_TEXT_CHARS:
            raise BadRequest(f"text must be 1 to {MAX_TEXT_CHARS} characters")
        check_words(text)  # every adapter's words pass here: one rule for all of them

    def _fitted(self, request: JobRequest) -> JobRequest:
        """A video's sound spans the clip: its length comes from the clip."""
        return fitted_to_video(request, self.config.generation)

    def _key_for(self, request: JobRequest, seed: int) -> str:
        video = request.video
        if video is not None:
            part: list[object] = [video.clip.sha256, round(video.clip.timing.duration_s * 1000),
                                  len(video.clip.frames), request.video_cap_bytes]
            text = request.caption is not None or request.prompt is not None
            return cache_key(model_tag=self.model_tag, options=request.options, video=part,
                             caption=request.caption, prompt=request.prompt,
                             seed=seed if text or request.seed is not None else "auto")
        if request.image is not None:
            # A drawn seed is random: a repeated picture with no seed given is still a hit.
            return cache_key(model_tag=self.model_tag, options=request.options,
                             image_sha256=request.image.sha256,
                             seed=request.seed if request.seed is not None else "auto")
        return cache_key(model_tag=self.model_tag, options=request.options,
                         caption=request.caption, prompt=request.prompt, seed=seed)

    async def _log_rejection(self, request: JobRequest, error: UserFacingError,
                             seed: int | None) -> None:
        """A refused request's row: everything known about it, nothing to answer later (or
        one more count on the row of the same refusal a moment ago: `record_refusal`).

        Raises `DuplicateRequest` for a redelivered request refused before: told already.
        """
        try:
            request_id, times = await self.request_log.record_refusal(record_for(
                request, new_request_id(), status="rejected", created_at=self._clock(),
                seed=seed, reason=error.code))
            log_request_outcome(request_id, request, "rejected", reason=error.code,
                                times=times)
        except DuplicateRequest:
            raise
        except StorageUnavailable as exc:  # said once by the outage watch; the user is told
            logger.info("could not log a rejected request (%s)", exc)
        except Exception:  # the refusal itself must still reach the user
            logger.exception("could not log a rejected request")

    async def _finish_from_cache(self, handle: JobHandle, request: JobRequest, seed: int,
                                 hit: CachedClip, created_at: float) -> None:
        now = self._clock()
        timings = {"queue_wait_s": 0.0, "caption_s": 0.0, "sound_s": 0.0, "encode_s": 0.0,
                   "total_s": max(0.0, now - created_at)}
        shape = answer_shape(request, hit.files, hit.duration_s)
        await self._patiently(f"the outcome of request {handle.id}", lambda: (
            self.request_log.update(
                handle.id, status="done", caption=hit.caption, prompt=hit.prompt, seed=hit.seed,
                cache_hit=True, batch_size=0, duration_s=hit.duration_s, started_at=now,
                finished_at=now, files={k: v.name for k, v in hit.files.items()},
                output_kind=shape.output_kind, sound_fit=shape.sound_fit, **timings)))
        log_request_outcome(handle.id, request, "done", text=hit.caption,
                            total_s=timings["total_s"], cache_hit=True)
        handle.emit(Done(JobResult(request_id=handle.id, caption=hit.caption, prompt=hit.prompt,
                                   seed=hit.seed, duration_s=hit.duration_s,
                                   files=dict(hit.files), cache_hit=True, batch_size=0,
                                   timings=timings, output_kind=shape.output_kind,
                                   sound_fit=shape.sound_fit,
                                   input_seconds=shape.input_seconds,
            video_cap_bytes=shape.video_cap_bytes)))
        await self._clean_up(handle.id)

    async def _clean_up(self, request_id: str) -> None:
        """Drop a settled request's spooled picture; never holds up or undoes its answer."""
        try:
            await self._patiently(f"the clean-up of {request_id}",
                                  lambda: self.spool.delete(request_id))
        except Exception as exc:  # a leftover picture is pruned later
            logger.warning("could not drop the spooled picture of %s (%s)", request_id, exc)

    async def _interrupt(self, record: RequestRecord, handler: RecoveredHandler | None) -> None:
        now = self._clock()
        await self._patiently(f"the outcome of request {record.id}", lambda: (
            self.request_log.update(record.id, status="interrupted", reason="interrupted",
                                    finished_at=now,
                                    total_s=max(0.0, now - record.created_at))))
        await self._clean_up(record.id)
        log_outcome(record.id, f"{record.platform}:{record.user_id}", record.source_kind,
                    "interrupted", reason="interrupted")
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

