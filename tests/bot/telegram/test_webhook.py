"""Webhook mode: Telegram POSTs updates to us; the secret header keeps strangers out."""

from __future__ import annotations

import logging
import time

import aiohttp
import pytest

from tests.bot.telegram.conftest import ANA, StartBot, picture, private


async def test_webhook_mode(start_bot: StartBot, unused_tcp_port: int,
                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # PTB logs every call's parameters at DEBUG
    port, secret = unused_tcp_port, "s3cret-Value_1"
    hook = f"http://127.0.0.1:{port}/telegram/hook"
    bot = await start_bot(telegram={"mode": "webhook", "webhook_url": hook,
                                    "webhook_listen": "127.0.0.1", "webhook_port": port,
                                    "webhook_secret": secret})
    assert bot.fake.webhook is not None
    assert (bot.fake.webhook["url"], bot.fake.webhook["secret_token"]) == (hook, secret)
    assert "setWebhook" in caplog.text and secret not in caplog.text

    msg = {"message_id": bot.fake.new_message_id(), "date": int(time.time()),
           "chat": private(ANA), "from": ANA, "photo": bot.photo_sizes(picture())}
    update = {"update_id": 500, "message": msg}
    signed = {"X-Telegram-Bot-Api-Secret-Token": secret}
    async with aiohttp.ClientSession() as http:
        async with http.post(hook, json=update,
                             headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as resp:
            assert resp.status == 403
        async with http.post(hook, json=update) as resp:
            assert resp.status == 403
        # Junk from someone who knows the secret is refused without hurting the listener.
        for junk in ("not json", "[]", '"text"', '{"no": "update_id"}'):
            async with http.post(hook, data=junk, headers=signed) as resp:
                assert resp.status == 400, junk
        async with http.post(hook, json=update, headers=signed) as resp:
            assert resp.status == 200
    voice = await bot.voice_for(msg)
    assert voice.files["voice"].startswith(b"OggS")
    assert len(bot.fake.calls_of("sendVoice")) == 1  # the refused posts did nothing


async def test_webhook_without_secret_warns(start_bot: StartBot, unused_tcp_port: int,
                                            caplog: pytest.LogCaptureFixture) -> None:
    port = unused_tcp_port
    hook = f"http://127.0.0.1:{port}/hook"
    bot = await start_bot(telegram={"mode": "webhook", "webhook_url": hook,
                                    "webhook_listen": "127.0.0.1", "webhook_port": port})
    assert "webhook_secret is not set" in caplog.text
    assert bot.fake.webhook is not None and "secret_token" not in bot.fake.webhook
