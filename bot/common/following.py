"""Following a job: its events become status texts, then one answer — a clip or an apology.

`follow_job` is the one loop every platform uses. The platform supplies a `JobSink`
(where the status line is shown, how a clip and an apology are sent); this module
decides what the user reads and when: the status line changes at most once per
interval (the newest text is never lost, only delayed), a job kept for the next start
is not reported as a failure, and whatever breaks while answering ends in the
catalogue's apology, never in a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from core.errors import GenerationFailed, ShuttingDown, StorageUnavailable, UserFacingError
from core.i18n import t
from core.jobs.events import Done, Failed, JobEvent, JobHandle, JobResult, Progress, Queued, Started
from core.records import Delivery

logger = logging.getLogger(__name__)


def status_text(event: JobEvent, lang: str) -> str | None:
    """The status line a user reads for a live event (None for the final ones)."""
    if isinstance(event, Queued):
        return t("queued", lang, position=event.position)
    if isinstance(event, Started):
        return t("started", lang)
    if isinstance(event, Progress):
        percent = int(100 * event.step / event.total) if event.total > 0 else 0
        return t("progress", lang, percent=percent)
    return None


def resumes(event: JobEvent) -> bool:
    """True for the failure that only means "stopping; the next start answers this job"."""
    return (isinstance(event, Failed) and isinstance(event.error, ShuttingDown)
            and bool(event.error.params.get("resumes")))


class SlowDown(Exception):
    """Raised by a status edit the platform refused for now (flood control)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"slow down for {seconds:g} s")
        self.seconds = seconds


class ThrottledStatus:
    """A status line shown through `show`, changed at most once per `interval` seconds.

    A text that arrives too soon is kept and shown when the interval has passed, so the
    last state is never lost; `SlowDown` from `edit` pushes the next change past it.
    Status changes are best effort: any other failure is logged and skipped.
    """

    def __init__(self, show: Callable[[str], Awaitable[None]], interval: float,
                 shown: str = "") -> None:
        self._show_text, self.interval = show, interval
        self.shown = shown
        self.pending: str | None = None
        # A text just shown counts as a change; none shown yet may be replaced at once.
        self.next_edit = time.monotonic() + (interval if shown else 0.0)
        self._flush: asyncio.Task[None] | None = None
        self._editing = False  # the flush task is inside an edit (not waiting for its turn)

    async def show(self, text: str) -> None:
        self.pending = None if text == self.shown else text
        if self.pending is None or (self._flush is not None and not self._flush.done()):
            return  # nothing new, or a change is already due and will show the newest text
        if time.monotonic() >= self.next_edit:
            await self._edit()
        else:
            self._schedule()

    def cancel(self) -> None:
        """Stop at once (the follower itself is being cancelled)."""
        if self._flush is not None and self._flush is not asyncio.current_task():
            self._flush.cancel()

    async def close(self) -> None:
        """No more changes: drop one still waiting for its turn, let one in flight land.

        Cancelling an edit in flight could leave a message the platform already posted but
        we never learnt about (an orphan status line beside the answer).
        """
        self.pending = None
        flush, self._flush = self._flush, None
        if flush is None or flush.done() or flush is asyncio.current_task():
            return
        if self._editing:
            await asyncio.wait({flush})
        else:
            flush.cancel()

    def _schedule(self) -> None:
        if self._flush is None or self._flush.done() or self._flush is asyncio.current_task():
            self._flush = asyncio.create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(max(0.0, self.next_edit - time.monotonic()))
        self._editing = True
        try:
            await self._edit()
        finally:
            self._editing = False

    async def _edit(self) -> None:
        text = self.pending
        if text is None:
            return
        self.pending = None
        try:
            await self._show_text(text)
            self.shown = text
            self.next_edit = time.monotonic() + self.interval
        except SlowDown as exc:
            if self.pending is None:  # keep a newer text that arrived during the call
                self.pending = text
            self.next_edit = time.monotonic() + exc.seconds
        except Exception as exc:  # a status line is a nicety; the answer still comes
            logger.info("status edit skipped (%s: %s)", type(exc).__name__, exc)
        if self.pending is not None:  # a newer text arrived during the call
            self._schedule()


class DeliveryLog(Protocol):
    """Where an answer's progress is recorded (the job engine), so a restart re-sends only
    what may not have arrived."""

    async def mark_delivery(self, request_id: str, state: Delivery) -> None: ...


class AnswerTarget(Protocol):
    """Where one request's status line and answer go, on one platform (a chat, a channel, an
    interaction): every platform's adapter has one, named `<Platform>AnswerTarget`."""

    lang: str

    async def announce(self, text: str) -> dict[str, Any]:
        """Show the first status line; returns what to add to the row's reply context
        (e.g. the status message's id), so that a restart edits it instead of adding one."""

    async def show(self, text: str) -> None:
        """Change the status line; may raise `SlowDown`."""

    async def on_event(self, event: JobEvent) -> None:
        """Sees every event of the job first (e.g. to renew a "recording…" indicator)."""

    async def deliver(self, result: JobResult) -> None:
        """Send the finished clip with its caption."""

    async def apologise(self, error: BaseException) -> None:
        """Tell the user in the catalogue's words why there is no clip."""

    def gave_up(self, error: BaseException) -> bool:
        """True when `error` means nothing can be posted any more (no point apologising)."""


async def follow_job(handle: JobHandle, target: AnswerTarget, *, interval: float,
                     shown: str = "", delivery: DeliveryLog | None = None,
                     delivered: Callable[[float], None] | None = None) -> None:
    """Mirror `handle`'s events on `target` (its status line now reads `shown`), then answer.

    The target sees every event first (`on_event`). With `delivery`, the answer is recorded
    as sending before it is posted and sent after. `delivered` hears how many seconds
    posting a clip took (the metrics' delivery stage).
    """
    status = ThrottledStatus(target.show, interval, shown)
    try:
        async for event in handle.events():
            await target.on_event(event)
            text = status_text(event, target.lang)
            if text is not None:
                await status.show(text)
                continue
            await status.close()
            if isinstance(event, Done):
                post = partial(target.deliver, event.result)
                await answer_once(handle.id, _timed(post, delivered) if delivered else post,
                                  delivery)
            elif isinstance(event, Failed) and not resumes(event):
                await answer_once(handle.id, partial(target.apologise, event.error), delivery)
    except asyncio.CancelledError:
        status.cancel()
        raise
    except Exception as exc:
        await status.close()
        if target.gave_up(exc):
            logger.warning("could not answer request %s: %s", handle.id, exc)
            return
        logger.exception("answering request %s failed", handle.id)
        apology = exc if isinstance(exc, UserFacingError) else GenerationFailed("answering failed")
        with contextlib.suppress(Exception):
            await answer_once(handle.id, partial(target.apologise, apology), delivery)


def _timed(post: Callable[[], Awaitable[None]], took: Callable[[float], None]
           ) -> Callable[[], Awaitable[None]]:
    """`post`, telling `took` how long it took when it succeeds."""

    async def timed() -> None:
        started = time.perf_counter()
        await post()
        took(time.perf_counter() - started)

    return timed


async def answer_once(request_id: str, post: Callable[[], Awaitable[None]],
                      delivery: DeliveryLog | None) -> None:
    """Post one answer, recorded as sending before and sent after (when `delivery` is given).

    A crash between the two leaves it "sending": the next start posts it again, since
    whether it arrived cannot be known — a second copy beats silence. The request log being
    away longer than the engine waits changes nothing: an answer still "owed" is posted
    again after a crash too.
    """
    if delivery is not None:
        try:
            await delivery.mark_delivery(request_id, Delivery.SENDING)
        except StorageUnavailable as exc:
            logger.warning("request %s is answered without being marked sending (%s)",
                           request_id, exc)
    await post()
    if delivery is not None:
        try:
            await delivery.mark_delivery(request_id, Delivery.SENT)
        except Exception as exc:  # posted already: an apology now would be a wrong answer
            logger.warning("request %s was answered but not marked sent (%s); a restart may "
                           "send it again", request_id, exc)
