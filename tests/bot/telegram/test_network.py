"""Dropped connections are retried and never stop the bot; the token stays out of every trace."""

from __future__ import annotations

import logging

import pytest

from tests.bot.telegram.conftest import ANA, BOB, TOKEN, Harness, voice_info

SECRET = TOKEN.split(":", 1)[1]  # the part after the bot id is what must never leak


async def test_dropped_connection_on_send_is_retried(bot: Harness) -> None:
    bot.fake.drop_next("sendVoice")
    msg = await bot.send_photo(ANA)
    voice = await bot.voice_for(msg)
    attempts = bot.fake.calls_of("sendVoice")
    assert attempts[0].result == {"error_code": 0}  # the fake hung up on the first try
    assert voice is attempts[1] and voice_info(voice).subtype == "OPUS"
    assert voice.params["caption"] == attempts[0].params["caption"]
    status = bot.fake.calls_of("sendMessage")[0]
    deleted = await bot.fake.wait_for("deleteMessage")
    assert int(deleted.params["message_id"]) == status.result["message_id"]


async def test_dropped_status_reply_does_not_lose_the_answer(bot: Harness) -> None:
    bot.fake.drop_next("sendMessage")
    msg = await bot.send_photo(BOB)
    voice = await bot.voice_for(msg)
    assert voice.reply_to == msg["message_id"]
    sent = bot.fake.calls_of("sendMessage")
    assert sent[0].result == {"error_code": 0} and sent[1].text == "Queued — #1 in line"


async def test_dropped_poll_does_not_stop_the_bot(bot: Harness,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    bot.fake.drop_next("getUpdates")
    msg = await bot.send_photo(ANA)  # wakes the current poll; the next one is dropped
    await bot.fake.wait_for("getUpdates")
    await bot.voice_for(msg)
    assert "polling failed" in caplog.text
    second = await bot.send_photo(BOB)
    await bot.voice_for(second)


async def test_token_never_logged_or_stored(bot: Harness,
                                            caplog: pytest.LogCaptureFixture) -> None:
    # Even a host that turns every HTTP client log on must not see the token.
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="httpcore")
    bot.fake.fail_next("sendVoice", status=429, retry_after=1)
    msg = await bot.send_photo(ANA)
    await bot.voice_for(msg)
    await bot.fake.wait_for("deleteMessage")
    bad = await bot.send_document(b"%PDF-1.7", "application/pdf", "x.pdf")
    await bot.text_for(bad, "PDF")
    assert "/bot***/sendVoice" in caplog.text  # the request lines were logged, masked
    assert "/file/bot***/documents/" in caplog.text
    assert SECRET not in caplog.text
    assert all(SECRET not in c.text for c in bot.fake.calls)
    await bot.stop()  # flush the database to disk before reading its files
    stored = [p for p in bot.config.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("sonify.db") for p in stored)
    assert all(SECRET.encode() not in p.read_bytes() for p in stored)
