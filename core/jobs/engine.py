"""The one job engine: the rules of core/jobs/contract.py, over a backend's `Transport`.

Every rule lives here once, for both backends: which requests are refused and the row each
refusal leaves, the limits (`core.limits`), seeds, cache keys, cache hits and their rows,
queueing a recorded request, and taking up what the last run left (core/jobs/recovery.py).
The transport (core/jobs/transport.py) says only where jobs wait and who renders them, and
where the counts come from: `local_engine` (core/jobs/local.py) or `redis_engine`
(core/distributed/transport.py).
"""

from __future__ import annotations

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
    QueueFull,
    RateLimited,
    ShuttingDown,
    StorageUnavailable,
    UserFacingError,
)
from core.jobs.cache import CachedClip, cache_key
from core.jobs.contract import ReceivedHandler, RecoveredHandler
from core.jobs.events import Done, JobHandle, JobResult
from core.jobs.journal import Journal
from core.jobs.recovery import Recovery
from core.jobs.request import JobRequest, Receipt
from core.jobs.rows import (
    done_row,
    ended_row,
    image_sha,
    model_tag,
    new_request_id,
    record_for,
    timings_of,
    video_columns,
)
from core.jobs.transport import Transport
from core.jobs.video_jobs import answer_shape, fitted_to_video
from core.limits import HOUR_S, Counts, Limits
from core.options import check_seed
from core.records import (
    Delivery,
    Platform,
    RequestRecord,
    RequestStatus,
    RowChanges,
    SourceKind,
)
from core.storage.request_log import RequestLog
from core.user_text import WORDS_MAX_CHARS, check_words

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 1000  # a caption or the user's words (which stop at WORDS_MAX_CHARS)
T = TypeVar("T")


class Engine(Recovery):
    """The `JobEngine` of core/jobs/contract.py, whichever backend `transport` is."""

    def __init__(self, config: Config, request_log: RequestLog, transport: Transport, *,
                 journal: Journal, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.config = config
        self.jobs = config.jobs
        self.request_log = request_log
        self.journal = journal  # where each request's outcome is told (log line, metrics)
        self.transport = transport
        self.cache = transport.cache
        self.spool = transport.spool
        self.limits = Limits(config.jobs)
        self.model_tag = model_tag(config)
        self._clock = clock
        self._accepting = False
        self._started = False
        self._stopped = False

    # lifecycle -----------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def start(self) -> None:
        """Start the transport, remember what the last run left (`resume_recovered` takes
        it up once the adapters are listening), start accepting."""
        if self._started:
            return
        await self.transport.start()
        self._started = True
        self._to_recover = [*await self.request_log.unfinished(),
                            *await self.request_log.unanswered()]
        if self._to_recover:
            # Expected after any stop with work queued: not a warning, and told as the user
            # sees it, not as the code does it.
            logger.info("%d request(s) from before the last stop will be answered once the "
                        "bots are connected", len(self._to_recover))
        self._accepting = True

    async def load_models(self) -> None:
        await self.transport.load_models()

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (contract)
        """Refuse new jobs; what is left is answered after the next start."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        self._accepting = False
        await self.transport.stop(self.jobs.shutdown_timeout_s if timeout is None else timeout)

    def queue_length(self) -> int:
        return self.transport.queue_length()

    # taking requests ---------------------------------------------------------------------

    async def receive(self, request: JobRequest) -> Receipt:
        """Record a request whose picture is still to be fetched (the durable point).

        Raises the refusal (already logged) when a limit says no; returns a duplicate
        receipt for a `dedupe_key` seen before.
        """
        if request.source is None or request.content_at_hand:
            raise ValueError("receive() takes a request with a source and no content")
        seed = await self._checked_seed(request)
        record = record_for(request, new_request_id(), status=RequestStatus.RECEIVED,
                            created_at=self._clock(), seed=seed)
        try:
            await self._admit(request, record, slot=True, place=True)
        except DuplicateRequest as dup:  # a redelivered request: answered once, already
            first = await self.request_log.get(dup.request_id)
            known = first.seed if first is not None and first.seed is not None else seed
            return Receipt(dup.request_id, dup.created_at, known, duplicate=True)
        return Receipt(record.id, record.created_at, seed)

    async def submit(self, request: JobRequest, *, receipt: Receipt | None = None) -> JobHandle:
        """Queue a job whose content is at hand; with `receipt`, the one `receive` recorded.

        Without a receipt its row is written first; refusals are logged and raised.
        """
        request = self._fitted(request)
        if receipt is not None:
            return await self._go_on(request, receipt)
        if not request.content_at_hand:
            raise ValueError("submit() without a receipt takes a request whose content is "
                             "at hand")
        seed = await self._checked_seed(request)
        key = self._key_for(request, seed)
        hit = await self.cache.lookup(key)
        rider = hit is None and await self.transport.in_flight(key)
        record = record_for(request, new_request_id(), status=RequestStatus.RECEIVED,
                            created_at=self._clock(), seed=seed, cache_key=key)
        # A cache hit costs no render and holds nothing; a rider takes no queue place.
        await self._admit(request, record, slot=hit is None, place=hit is None and not rider)
        return await self._go_on(request, Receipt(record.id, record.created_at, seed), hit)

    async def refuse(self, receipt: Receipt, error: UserFacingError) -> None:
        """A received request cannot go on (its picture cannot be had): log it as refused.

        The adapter then tells the user why (the answer the row owes them).
        """
        try:
            record = await self._patiently(f"the refusal of {receipt.id}",
                                           lambda: self.request_log.get(receipt.id))
            if record is None or record.finished:
                return
            now = self._clock()
            changes = ended_row(RequestStatus.REJECTED, error.code, created_at=record.created_at,
                                finished_at=now)
            await self._patiently(f"the refusal of {receipt.id}",
                                  lambda: self.request_log.update(receipt.id, **changes))
        finally:
            self.transport.let_go(receipt.id)
        self.journal.outcome(record.id, f"{record.platform}:{record.user_id}",
                             record.source_kind, RequestStatus.REJECTED, reason=error.code,
                             total_s=changes["total_s"])

    async def reject(self, *, platform: Platform, user_id: str, chat_id: str,
                     source_kind: SourceKind,
                     error: UserFacingError, lang: str = "en",
                     dedupe_key: str | None = None) -> str:
        """Log a request refused before anything was recorded; returns the row's id.

        Raises `DuplicateRequest` when `dedupe_key` was recorded before (told already).
        """
        now = self._clock()
        request_id, times = await self.request_log.record_refusal(RequestRecord(
            id=new_request_id(), platform=platform, user_id=user_id, chat_id=chat_id,
            source_kind=source_kind, status=RequestStatus.REJECTED, reason=error.code, lang=lang,
            created_at=now, finished_at=now, total_s=0.0, dedupe_key=dedupe_key))
        self.journal.outcome(request_id, f"{platform}:{user_id}", source_kind,
                             RequestStatus.REJECTED, reason=error.code, times=times)
        return request_id

    async def note_reply(self, request_id: str, **context: object) -> None:
        """Add to a request's reply context (e.g. the status message shown), for restarts."""
        await self._patiently(f"the reply context of {request_id}",
                              lambda: self.request_log.merge_reply_context(request_id,
                                                                           dict(context)))

    async def mark_delivery(self, request_id: str, state: Delivery) -> None:
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

    async def follow(self, request_id: str) -> JobHandle | None:
        return await self.transport.follow(request_id)

    # the rules -------------------------------------------------------------------------------

    async def _patiently(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """`op()` on a request that is recorded already: a database outage is waited out
        (up to `[storage] outage_grace_s`, then DatabaseUnavailable)."""
        return await self.request_log.outage.wait_out(op, what)

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
        # Every adapter's words pass here: one rule, one bound for all of them.
        if request.prompt is not None and len(request.prompt) > WORDS_MAX_CHARS:
            raise BadRequest("words too long", code="words_too_long",
                             max_chars=WORDS_MAX_CHARS)
        check_words(text)

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

    async def _admit(self, request: JobRequest, record: RequestRecord, *, slot: bool,
                     place: bool) -> None:
        """Write the row if the limits allow it; a refusal is logged and raised."""
        user = (request.platform, request.user_id)

        def rule(counts: Counts) -> None:
            self.limits.check(counts, user=user, now=record.created_at,
                              is_admin=request.is_admin, extra_picture=request.extra_picture,
                              per_hour=request.per_hour,
                              slot=slot, place=place,
                              estimate=lambda who: self.transport.estimate_wait(who, counts))

        try:
            await self.transport.admit(record, rule, hour_since=record.created_at - HOUR_S,
                                       slot=slot, place=place)
        except (RateLimited, QueueFull) as exc:
            await self._log_rejection(request, exc, record.seed)
            raise

    async def _log_rejection(self, request: JobRequest, error: UserFacingError,
                             seed: int | None) -> None:
        """A refused request's row: everything known about it, nothing to answer later (or
        one more count on the row of the same refusal a moment ago: `record_refusal`).

        Raises `DuplicateRequest` for a redelivered request refused before: told already.
        """
        try:
            request_id, times = await self.request_log.record_refusal(record_for(
                request, new_request_id(), status=RequestStatus.REJECTED, created_at=self._clock(),
                seed=seed, reason=error.code))
            self.journal.request_outcome(request_id, request, RequestStatus.REJECTED,
                                         reason=error.code, times=times)
        except DuplicateRequest:
            raise
        except StorageUnavailable as exc:  # said once by the outage watch; the user is told
            logger.info("could not log a rejected request (%s)", exc)
        except Exception:  # the refusal itself must still reach the user
            logger.exception("could not log a rejected request")

    # from a recorded request to its job --------------------------------------------------------

    async def _go_on(self, request: JobRequest, receipt: Receipt,
                     hit: CachedClip | None = None, key: str | None = None) -> JobHandle:
        """From a recorded request to a queued job, a ride, or a cached clip (`hit`, when it
        was found before the row was written). The row exists already, so a database outage
        is waited out here rather than failing the request; `key`: the one stored with it."""
        handle = JobHandle(receipt.id, request)
        try:
            self._validate(request)
            if not request.content_at_hand:
                raise BadRequest("the picture was not fetched", code="bad_option")
            key = key or self._key_for(request, receipt.seed)
            found = hit  # mypy: a closure sees the narrowed `key` only through a new name

            async def queue(key: str = key) -> None:
                clip = found or await self.cache.lookup(key)
                if clip is None:
                    clip = await self.transport.queue(handle, request, receipt, key)
                if clip is not None:
                    await self._serve_cached(handle, request, receipt, key, clip)

            await self._patiently(f"queueing request {receipt.id}", queue)
        except Exception as exc:
            self.transport.let_go(receipt.id)
            raise await self._cannot_queue(receipt, exc) from None
        return handle

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

    async def _serve_cached(self, handle: JobHandle, request: JobRequest, receipt: Receipt,
                            key: str, hit: CachedClip) -> None:
        """Answer a recorded request with a stored clip: its row, then its `Done`."""
        now = self._clock()
        changes = done_row(created_at=receipt.created_at, started_at=now, finished_at=now,
                           caption=hit.caption, prompt=hit.prompt, seed=hit.seed,
                           duration_s=hit.duration_s, files=hit.files, cache_hit=True,
                           batch_size=0)
        changes["cache_key"], changes["image_sha256"] = key, image_sha(request)
        shape = answer_shape(request, hit.files, hit.duration_s)
        changes.update(video_columns(request))
        changes.update(RowChanges(output_kind=shape.output_kind, sound_fit=shape.sound_fit))
        await self._patiently(f"the outcome of request {handle.id}",
                              lambda: self.request_log.update(handle.id, **changes))
        self.transport.let_go(handle.id)
        timings = timings_of(changes)
        self.journal.request_outcome(handle.id, request, RequestStatus.DONE, text=hit.caption,
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
