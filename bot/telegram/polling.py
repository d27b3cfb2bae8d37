"""Long polling in our own loop: an update is confirmed only once its request is recorded.

Telegram forgets an update once a later `getUpdates` asks for an offset past it. PTB's
own updater moves the offset as soon as it has *fetched* updates; here each update is
handed to the application (whose handlers record requests before returning) and the
offset moves past it only afterwards — and not at all when recording failed, so that
Telegram delivers it again. Updates recorded before are recognised by their id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from telegram import Update
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application

from bot.telegram.replies import retry_after_seconds

logger = logging.getLogger(__name__)

ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
MAX_BACKOFF_S = 30.0
# Handles one update; False when its request could not be recorded (`Handlers.process`).
Process = Callable[[Application[Any, Any, Any, Any, Any, Any], Update], Awaitable[bool]]


class UpdatePoller:
    """Fetches updates, has them processed one by one, and confirms what was recorded."""

    def __init__(self, app: Application[Any, Any, Any, Any, Any, Any], *, timeout_s: float,
                 process: Process, on_error: Callable[[TelegramError], None]) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.process = process  # False: the update's request could not be recorded
        self.on_error = on_error
        self.offset: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.failing = False  # the last getUpdates failed (for /readyz)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="telegram-poller")

    async def stop(self) -> None:
        """Stop polling; confirm what was processed so a restart does not read it again."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.offset is not None:
            with contextlib.suppress(TelegramError):
                # Confirms every update below the offset; what it returns stays unconfirmed.
                await self.app.bot.get_updates(offset=self.offset, limit=1,
                                               timeout=timedelta(0),
                                               allowed_updates=ALLOWED_UPDATES)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                updates = await self.app.bot.get_updates(
                    offset=self.offset, timeout=timedelta(seconds=self.timeout_s),
                    read_timeout=self.timeout_s + 10.0, allowed_updates=ALLOWED_UPDATES)
            except InvalidToken:
                logger.error("telegram: the token was refused while polling; stopped polling")
                self.failing = True
                return
            except RetryAfter as exc:
                await asyncio.sleep(retry_after_seconds(exc))
                continue
            except (NetworkError, TelegramError) as exc:
                self.failing = True
                self.on_error(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            self.failing = False
            delay = 0.5 if await self._process(updates) else min(delay * 2, MAX_BACKOFF_S)
            if delay > 0.5:
                await asyncio.sleep(delay)

    async def _process(self, updates: tuple[Update, ...]) -> bool:
        """Process in order; False at the first update that could not be recorded."""
        for update in updates:
            if not await self.process(self.app, update):
                return False  # offset stays: Telegram sends it (and what follows) again
            self.offset = update.update_id + 1
        return True
