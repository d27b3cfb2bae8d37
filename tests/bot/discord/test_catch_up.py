"""Messages posted while the bot is away are answered after it starts, once each."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import discord
import pytest

from core.storage.request_log import RequestLog
from tests.bot.discord.conftest import Bot, bot_config, png_bytes
from tests.bot.discord.fake_discord import ALICE, BOB, CAROL, WATCHED, FakeDiscord, Upload


def answers(fake: FakeDiscord, message: dict) -> list[dict]:
    return [m for m in fake.replies_to(message["id"]) if m["attachments"]]


async def cursor_of(bot: Bot, channel_id: int) -> str | None:
    """The last message the bot has handled in a channel, as its cursor says."""
    assert bot.services is not None
    known = await bot.services.cursors.known("discord")
    return next((last for channel, last, _ in known if channel == str(channel_id)), None)


async def test_pictures_posted_while_away_are_answered_after_the_start(
        fake: FakeDiscord, make_bot: Any) -> None:
    bot: Bot = await make_bot()
    live = await fake.send_message(WATCHED, ALICE, "", [Upload("live.png", png_bytes(81))])
    await fake.until(lambda: answers(fake, live))
    dm_live = await fake.send_message(None, BOB, "", [Upload("dm.png", png_bytes(82))])
    await fake.until(lambda: answers(fake, dm_live))
    await bot.stop()

    away = [await fake.send_message(WATCHED, author, "", [Upload(f"{n}.png", png_bytes(n))],
                                    bot_online=False)
            for n, author in ((83, ALICE), (84, CAROL))]
    chat = await fake.send_message(WATCHED, CAROL, "good morning", bot_online=False)
    dm_away = await fake.send_message(None, BOB, "", [Upload("dm2.png", png_bytes(85))],
                                      bot_online=False)
    await bot.start()
    for message in (*away, dm_away):
        await fake.until(lambda m=message: answers(fake, m), timeout=30)
    # Once each: nothing answered twice, the chat line and the live ones left alone.
    assert [len(answers(fake, m)) for m in (live, dm_live, *away, dm_away)] == [1] * 5
    assert fake.replies_to(chat["id"]) == []
    assert bot.services is not None
    rows = await bot.services.request_log.rows_since(0, ["status"])
    assert [r.status for r in rows] == ["done"] * 5

    # Read back again after another restart: all is known, nothing happens.
    await bot.stop()
    await bot.start()
    assert bot.adapter is not None
    # The start's own read-back goes over the bot's last answers (posted while the last one
    # read back); once it is done, a second one finds nothing.
    await asyncio.wait_for(bot.adapter.caught_up.wait(), 20)
    assert await bot.adapter.catch_up.run(bot.adapter.client) == 0  # type: ignore[arg-type]
    assert [len(answers(fake, m)) for m in (live, dm_live, *away, dm_away)] == [1] * 5


async def test_the_first_start_does_not_answer_old_history(fake: FakeDiscord,
                                                          make_bot: Any) -> None:
    old = await fake.send_message(WATCHED, ALICE, "", [Upload("old.png", png_bytes(86))],
                                  bot_online=False)
    bot: Bot = await make_bot()
    assert bot.adapter is not None
    await bot.adapter.catch_up.run(bot.adapter.client)  # type: ignore[arg-type]
    assert fake.replies_to(old["id"]) == []
    assert bot.services is not None
    cursor = await cursor_of(bot, WATCHED)
    assert cursor is not None and int(cursor) > int(old["id"])


async def test_catch_up_is_bounded_by_count(fake: FakeDiscord, make_bot: Any) -> None:
    bot: Bot = await make_bot(discord={"catch_up_max_per_channel": 2})
    assert bot.adapter is not None
    await asyncio.wait_for(bot.adapter.caught_up.wait(), 20)  # the session is settled
    first = await fake.send_message(WATCHED, ALICE, "", [Upload("a.png", png_bytes(87))])
    await fake.until(lambda: answers(fake, first))
    await bot.stop()
    away = [await fake.send_message(WATCHED, author, "", [Upload(f"{n}.png", png_bytes(n))],
                                    bot_online=False)
            for n, author in ((88, ALICE), (89, BOB), (90, CAROL))]
    await bot.start()
    await fake.until(lambda: all(answers(fake, m) for m in away[:2]), timeout=30)
    assert bot.adapter is not None
    await asyncio.wait_for(bot.adapter.caught_up.wait(), 20)
    assert answers(fake, away[2]) == []  # past the per-channel bound (the oldest come first)


async def test_messages_older_than_the_window_are_not_read_back(
        fake: FakeDiscord, make_bot: Any, tmp_path: Path) -> None:
    """A bot away for 3 h with a 1 h window: its cursor is 3 h old, so everything since is
    after it; only the last hour is read back. (The window alone decides here: without it
    the 2 h old picture would be answered too.)"""
    now = discord.utils.utcnow()
    request_log = await RequestLog.open(bot_config(fake, tmp_path).database_url)
    try:  # the cursor the bot left when it went away 3 h ago
        await request_log.cursors.advance("discord", str(WATCHED), str(
            discord.utils.time_snowflake(now - datetime.timedelta(hours=3))))
    finally:
        await request_log.close()
    old = await fake.send_message(WATCHED, ALICE, "", [Upload("old.png", png_bytes(91))],
                                  bot_online=False, created=now - datetime.timedelta(hours=2))
    recent = await fake.send_message(WATCHED, BOB, "", [Upload("new.png", png_bytes(92))],
                                     bot_online=False,
                                     created=now - datetime.timedelta(minutes=30))
    bot: Bot = await make_bot(discord={"catch_up_hours": 1.0})
    assert bot.adapter is not None and bot.services is not None
    await fake.until(lambda: answers(fake, recent), timeout=30)
    await asyncio.wait_for(bot.adapter.caught_up.wait(), 20)  # the read-back is over
    assert answers(fake, old) == []
    rows = await bot.services.request_log.rows_since(0, ["status"])
    assert [r.status for r in rows] == ["done"]  # the old one was never taken up


async def test_the_cursor_never_passes_a_message_still_being_recorded(
        fake: FakeDiscord, make_bot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each message is handled in a task of its own: a later picture (and the bot's replies
    to it) can be recorded first. The cursor waits for the earlier one, else a crash at that
    moment would lose it — nothing reads back what is behind the cursor."""
    bot: Bot = await make_bot()
    assert bot.adapter is not None and bot.services is not None
    await asyncio.wait_for(bot.adapter.caught_up.wait(), 20)
    requests = bot.adapter.requests
    take, release = requests.take, asyncio.Event()

    async def slow_to_record(request: Any, target: Any) -> bool:
        if (request.source or {}).get("filename") == "slow.png":
            await release.wait()  # say, a database busy with other writers
        return await take(request, target)

    monkeypatch.setattr(requests, "take", slow_to_record)
    slow = await fake.send_message(WATCHED, ALICE, "", [Upload("slow.png", png_bytes(93))])
    quick = await fake.send_message(WATCHED, BOB, "", [Upload("quick.png", png_bytes(94))])
    await fake.until(lambda: answers(fake, quick), timeout=30)
    cursor = await cursor_of(bot, WATCHED)
    assert cursor is not None and int(cursor) < int(slow["id"])

    release.set()
    await fake.until(lambda: answers(fake, slow), timeout=30)

    async def past_both() -> None:  # then it moves on, past the quick one too
        # Polling: the row changes in the handler's own time; no event tells the test.
        while int(await cursor_of(bot, WATCHED) or 0) < int(quick["id"]):  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    await asyncio.wait_for(past_both(), 10)
