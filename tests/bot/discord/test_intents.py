"""A bot whose application lacks the Message Content intent is told how to fix it, in the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.bot.discord.fake_discord import FakeDiscord

DISALLOWED_INTENTS = 4014  # Discord's gateway close code


class ErrorWatch(logging.Handler):
    """Collects error records and wakes the test when one arrives (from any thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.ERROR)
        self.loop = loop
        self.lines: list[str] = []
        self.arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.loop.call_soon_threadsafe(self.arrived.set)


@pytest.fixture
async def errors() -> AsyncIterator[ErrorWatch]:
    watch = ErrorWatch(asyncio.get_running_loop())
    watch.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(watch)
    yield watch
    root.removeHandler(watch)


async def test_a_refused_message_content_intent_is_explained(fake: FakeDiscord, make_bot: Any,
                                                             errors: ErrorWatch) -> None:
    fake.identify_close_code = DISALLOWED_INTENTS
    await make_bot()
    await asyncio.wait_for(errors.arrived.wait(), 20)
    (line,) = errors.lines
    assert line.startswith("ERROR bot.discord")
    assert "enable the Message Content intent" in line
    assert "Developer Portal > your application > Bot" in line
    assert "Traceback" not in line and "\n" not in line
