"""Webhook mode: Telegram POSTs updates to us; the secret header keeps strangers out."""

from __future__ import annotations

import time

import aiohttp

from tests.bot.telegram.conftest import ANA, StartBot, picture, private


async def test_webhook_mode(start_bot: StartBot, unused_tcp_port: int) -> None:
    port, secret = unused_tcp_port, "s3cret-Value_1"
    hook = f"http://127.0.0.1:{port}/telegram/hook"
    bot = await start_bot(telegram={"mode": "webhook", "webhook_url": hook,
                                    "webhook_listen": "127.0.0.1", "webhook_port": port,
                                    "webhook_secret": secret})
    assert bot.fake.webhook is not None
    assert (bot.fake.webhook["url"], bot.fake.webhook["secret_token"]) == (hook, secret)

    msg = {"message_id": bot.fake.new_message_id(), "date": int(time.time()),
           "chat": private(ANA), "from": ANA, "photo": bot.photo_sizes(picture())}
    update = {"update_id": 500, "message": msg}
    async with aiohttp.ClientSession() as http:
        async with http.post(hook, json=update,
                             headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as resp:
            assert resp.status == 403
        async with http.post(hook, json=update) as resp:
            assert resp.status == 403
        async with http.post(hook, json=update,
                             headers={"X-Telegram-Bot-Api-Secret-Token": secret}) as resp:
            assert resp.status == 200
    voice = await bot.voice_for(msg)
    assert voice.files["voice"].startswith(b"OggS")
    assert len(bot.fake.calls_of("sendVoice")) == 1  # the refused posts did nothing
