"""From a platform's message to an answer, with the durable point first.

Every platform takes a request the same way:

1. `take` records it (`JobEngine.receive`, or `submit` when the content is at hand) and
   returns once the row exists — only then may the platform be told the update is
   handled (Telegram's offset, a webhook's 200, a Discord channel's cursor);
2. in the background: the status line ("Queued — #3"), whose message id is added to the
   row; the picture fetched and decoded; the job submitted; its events followed; one
   answer posted, recorded as sending before and sent after.

After a restart `resume` carries a recorded request on from step 2, so a crash at any
moment leaves every recorded request with one answer: a clip or an apology.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bot.common.following import AnswerTarget, answer_once, follow_job
from bot.common.tasks import BackgroundTasks
from core.errors import DuplicateRequest, GenerationFailed, StorageUnavailable, UserFacingError
from core.i18n import t
from core.intake.decode import DecodedImage
from core.jobs.contract import JobEngine
from core.jobs.events import JobHandle
from core.jobs.request import JobRequest, Receipt

Fetch = Callable[[dict[str, Any]], Awaitable[DecodedImage]]

logger = logging.getLogger(__name__)


@dataclass
class FlowSettings:
    """How an adapter's answers are paced and its pictures fetched."""

    interval: float  # shortest time between two status edits
    fetch: Fetch  # a request's picture from its stored source
    delivered: Callable[[float], None] | None = None  # seconds a clip took to post (metrics)


class RequestFlow:
    """Takes requests for one platform and carries each on to its one answer."""

    def __init__(self, engine: JobEngine, tasks: BackgroundTasks,
                 settings: FlowSettings) -> None:
        self.engine, self.tasks, self.settings = engine, tasks, settings

    async def take(self, request: JobRequest, target: AnswerTarget) -> bool:
        """Record `request`, then carry it on in the background.

        Returns False for a redelivered request (already taken). A refusal is raised (it
        is logged already; the platform says why); a StorageUnavailable means it was not
        recorded (the request log is away), so the platform must not confirm the update and
        the user is asked to try again in a moment.
        """
        if request.content_at_hand:
            try:
                handle = await self.engine.submit(request)
            except DuplicateRequest:
                return False
            shown = t("queued", target.lang, position=self.engine.queue_length() + 1)
            self.tasks.spawn(self._follow_new(handle, target, shown), handle)
            return True
        receipt = await self.engine.receive(request)
        if receipt.duplicate:
            return False
        self.tasks.spawn(self._carry_on(request, receipt, target), waiting=True)
        return True

    async def resume(self, request: JobRequest | None, receipt: Receipt,
                     target: AnswerTarget | None) -> None:
        """Carry on a request recorded before a restart (its picture not fetched yet).

        One that cannot be (a row without its source, or nowhere left to answer) is refused,
        which ends its row and gives back the user's place in the limits.
        """
        if request is None or target is None:
            logger.warning("received request %s cannot be carried on", receipt.id)
            await self.engine.refuse(receipt, GenerationFailed("unusable row",
                                                               code="interrupted"))
            return
        self.tasks.spawn(self._carry_on(request, receipt, target), waiting=True)

    def answer_recovered(self, handle: JobHandle, target: AnswerTarget) -> None:
        """Follow a job taken up after a restart (re-run, or finished and not yet sent)."""
        self.tasks.spawn(self._follow(handle, target, ""), handle)

    async def _announce(self, request_id: str, target: AnswerTarget, text: str) -> None:
        context = await target.announce(text)
        if context:
            try:
                await self.engine.note_reply(request_id, **context)
            except StorageUnavailable as exc:  # only a restart would miss it (a new line)
                logger.warning("request %s: its status message was not recorded (%s)",
                               request_id, exc)

    async def _follow_new(self, handle: JobHandle, target: AnswerTarget, shown: str) -> None:
        await self._announce(handle.id, target, shown)
        await self._follow(handle, target, shown)

    async def _carry_on(self, request: JobRequest, receipt: Receipt,
                        target: AnswerTarget) -> None:
        shown = t("queued", target.lang, position=self.engine.queue_length() + 1)
        await self._announce(receipt.id, target, shown)
        assert request.source is not None
        try:
            handle = await self._submit_fetched(request, receipt, target)
        except StorageUnavailable as exc:
            # The request log stayed away longer than the engine waits: the row is still
            # received, and the next start fetches and answers it (one answer, not two).
            logger.warning("request %s is left for the next start (%s)", receipt.id, exc)
            return
        if handle is not None:
            self.tasks.follows(handle)
            await self._follow(handle, target, shown)

    async def _submit_fetched(self, request: JobRequest, receipt: Receipt,
                              target: AnswerTarget) -> JobHandle | None:
        """Fetch the picture and submit the job; None when it was refused (and told so)."""
        assert request.source is not None
        try:
            image = await self.settings.fetch(request.source)
        except UserFacingError as error:
            await self.engine.refuse(receipt, error)
            await answer_once(receipt.id, partial(target.apologise, error), self.engine)
            return None
        try:
            return await self.engine.submit(request.with_image(image), receipt=receipt)
        except UserFacingError as error:  # the engine has marked the row refused
            await answer_once(receipt.id, partial(target.apologise, error), self.engine)
            return None

    async def _follow(self, handle: JobHandle, target: AnswerTarget, shown: str) -> None:
        await follow_job(handle, target, interval=self.settings.interval, shown=shown,
                         delivery=self.engine, delivered=self.settings.delivered)
