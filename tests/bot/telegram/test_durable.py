"""The durable point: an update is confirmed to Telegram only once its request is recorded,
a redelivered update is answered once, and a picture still being fetched when the bot stops
is fetched again after it starts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from core.errors import StorageUnavailable
from core.i18n import t
from core.storage.migrate import sqlite_file
from tests.bot.telegram.conftest import ANA, BOB, ELENA, Harness, StartBot, picture, private
from tests.local_servers import Unwritable, sqlite_files


def photo_update(bot: Harness, user: dict[str, Any], update_id: int) -> dict[str, Any]:
    msg = {"message_id": bot.fake.new_message_id(), "date": int(time.time()),
           "chat": private(user), "from": user, "photo": bot.photo_sizes(picture())}
    return {"update_id": update_id, "message": msg}


async def statuses(bot: Harness, *, settled: bool = True) -> list[tuple[str, str | None]]:
    """(status, delivery) of every row (once the bot has finished what it was doing)."""
    assert bot.services is not None and bot.adapter is not None
    if settled:
        await asyncio.wait_for(bot.adapter.requests.tasks.idle(), 20)
    rows = await bot.services.request_log.rows_since(0, ["status", "delivery"])
    return sorted((r.status, r.delivery) for r in rows)


async def test_a_redelivered_update_is_answered_once(bot: Harness) -> None:
    """Telegram sends an update again when its offset was never confirmed (a crash)."""
    update = photo_update(bot, ANA, 9001)
    await bot.fake.push(update)
    await bot.voice_for(update["message"])
    await bot.fake.push(update)  # the same update id again
    later = await bot.send_photo(BOB)
    await bot.voice_for(later)  # the redelivery was read before this one
    assert len(bot.fake.calls_of("sendVoice")) == 2
    assert await statuses(bot) == [("done", "sent"), ("done", "sent")]


async def test_an_update_that_cannot_be_recorded_is_read_again(bot: Harness) -> None:
    """The request log refuses a write once: no apology, no confirmation; Telegram's next
    delivery is recorded and answered."""
    assert bot.services is not None
    request_log = bot.services.request_log
    real_insert = request_log.insert
    failures: list[str] = []

    async def failing_once(record: Any) -> None:
        if not failures:
            failures.append(record.id)
            raise StorageUnavailable("disk full")
        await real_insert(record)

    request_log.insert = failing_once  # type: ignore[method-assign]
    msg = await bot.send_photo(ELENA)
    await bot.voice_for(msg)
    assert failures  # it did fail once
    texts = [c.text for c in bot.fake.calls if c.method in ("sendMessage", "editMessageText")]
    assert not any("Lo siento" in text for text in texts)
    assert len(bot.fake.calls_of("sendVoice")) == 1
    assert await statuses(bot) == [("done", "sent")]


async def test_while_the_log_cannot_be_written_a_photo_is_told_later_and_answered_after(
        bot: Harness) -> None:
    """The SQLite file unwritable for real (`chattr +i`): the user hears once that the bot
    will get to it, the update is not confirmed, and once the file can be written the next
    delivery is recorded and answered — one clip."""
    assert bot.services is not None
    database = sqlite_file(bot.config.database_url)
    assert database is not None
    Unwritable.check(database.parent)
    later = t("unavailable_later", "en")
    fault = sqlite_files(database)
    fault.apply()
    try:
        msg = await bot.send_photo(ANA)
        await bot.fake.wait_for("sendMessage", lambda c: c.text == later)
        # Delivered again (and refused again) while the file stays unwritable.
        await bot.fake.wait_delivered(bot.fake.last_update_id, 3)
        assert bot.fake.confirmed <= bot.fake.last_update_id  # never confirmed meanwhile
    finally:
        fault.restore()
    voice = await bot.voice_for(msg)
    assert voice.files["voice"].startswith(b"OggS")
    assert [c.text for c in bot.fake.calls if c.text == later] == [later]  # told once
    assert await statuses(bot) == [("done", "sent")]


async def test_a_picture_being_fetched_at_a_stop_is_fetched_after_the_start(
        start_bot: StartBot) -> None:
    bot = await start_bot()
    bot.fake.downloads_gate = asyncio.Event()  # Telegram's file server hangs
    msg = await bot.send_photo(ANA)
    await bot.fake.wait_for("getFile")
    assert bot.fake.confirmed > 0  # recorded, so confirmed: Telegram will not send it again
    assert await statuses(bot, settled=False) == [("received", "owed")]
    await bot.stop()
    bot.fake.downloads_gate.set()
    bot.fake.downloads_gate = None
    await bot.start()
    voice = await bot.voice_for(msg)
    assert voice.files["voice"].startswith(b"OggS")
    # The status message shown before the stop is the one finished, not a second one.
    queued = [c for c in bot.fake.calls_of("sendMessage") if c.text.startswith("Queued")]
    assert len(queued) == 1
    assert await statuses(bot) == [("done", "sent")]


async def test_a_webhook_update_is_answered_200_only_once_recorded(
        start_bot: StartBot, unused_tcp_port: int) -> None:
    hook = f"http://127.0.0.1:{unused_tcp_port}/hook"
    bot = await start_bot(telegram={"mode": "webhook", "webhook_url": hook,
                                    "webhook_listen": "127.0.0.1",
                                    "webhook_port": unused_tcp_port})
    assert bot.services is not None
    request_log = bot.services.request_log
    real_insert = request_log.insert

    async def unavailable(record: Any) -> None:
        raise StorageUnavailable("database restarting")

    update = photo_update(bot, ANA, 777)
    async with aiohttp.ClientSession() as http:
        request_log.insert = unavailable  # type: ignore[method-assign]
        async with http.post(hook, json=update) as resp:
            assert resp.status == 503  # Telegram retries it
        request_log.insert = real_insert  # type: ignore[method-assign]
        async with http.post(hook, json=update) as resp:
            assert resp.status == 200
        async with http.post(hook, json=update) as resp:  # a retry of a recorded update
            assert resp.status == 200
    await bot.voice_for(update["message"])
    assert len(bot.fake.calls_of("sendVoice")) == 1
    assert await statuses(bot) == [("done", "sent")]
