"""Threads of watched channels are watched too; threads of other channels are not."""

from __future__ import annotations

from tests.bot.discord.conftest import Bot, png_bytes
from tests.bot.discord.fake_discord import (
    ALICE,
    OTHER_THREAD,
    THREAD,
    FakeDiscord,
    Upload,
)


def answers(fake: FakeDiscord, message: dict) -> list[dict]:
    """The bot's replies to `message` that carry a file."""
    return [m for m in fake.replies_to(message["id"]) if m["attachments"]]


async def test_a_picture_in_a_thread_of_a_watched_channel_is_answered_there(
        fake: FakeDiscord, bot: Bot) -> None:
    posted = await fake.send_message(THREAD, ALICE, "", [Upload("t.png", png_bytes(41))])
    (answer,) = await fake.until(lambda: answers(fake, posted))
    assert answer["channel_id"] == str(THREAD)
    assert answer["content"].startswith("🔊 ")
    assert fake.file(answer["attachments"][0])[:4] == b"OggS"


async def test_a_thread_of_an_unwatched_channel_needs_a_mention(fake: FakeDiscord,
                                                                bot: Bot) -> None:
    quiet = await fake.send_message(OTHER_THREAD, ALICE, "", [Upload("q.png", png_bytes(42))])
    loud = await fake.send_message(OTHER_THREAD, ALICE, "and this?",
                                   [Upload("l.png", png_bytes(43))], mention_bot=True)
    (answer,) = await fake.until(lambda: answers(fake, loud))
    assert answer["channel_id"] == str(OTHER_THREAD)
    assert fake.replies_to(quiet["id"]) == []
    assert not any(quiet["attachments"][0]["url"].endswith(c.path) for c in fake.calls)
