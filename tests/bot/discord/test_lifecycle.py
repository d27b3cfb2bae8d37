"""Command registration, voice messages, edit throttling, answering after a crash."""

from __future__ import annotations

import asyncio
import base64
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from bot.discord.commands import sync_commands
from core.errors import ConfigError
from core.i18n import t
from core.records import RequestRecord
from tests.bot.discord.conftest import (
    TOKEN,
    GatedPipeline,
    bot_config,
    png_bytes,
    read_clip,
)
from tests.bot.discord.fake_discord import (
    ALICE,
    BOT_ID,
    GUILD_ID,
    OTHER,
    VOICE,
    WATCHED,
    FakeDiscord,
    Upload,
)


async def test_sync_commands_per_guild_and_on_start(fake: FakeDiscord, tmp_path: Path,
                                                   make_bot: Any) -> None:
    cfg = bot_config(fake, tmp_path / "sync", {"guilds": [GUILD_ID]},
                     generation={"max_seconds": 8.0})
    assert await sync_commands(cfg) == 4
    assert not (tmp_path / "sync").exists()  # config and Discord only: no database was made
    (call,) = fake.find("PUT", rf"/applications/{BOT_ID}/guilds/{GUILD_ID}/commands")
    commands = {c["name"]: c for c in call.json}
    assert set(commands) == {"sonify", "stats", "settings", "Sonify this image"}
    # /settings is shown by default to members with Manage Server only, never in DMs.
    assert int(commands["settings"]["default_member_permissions"]) == 1 << 5
    assert commands["settings"]["contexts"] == [0]
    options = {o["name"]: o for o in commands["sonify"]["options"]}
    assert {n: o["type"] for n, o in options.items()} == {"image": 11, "url": 3, "seconds": 10,
                                                          "seed": 4}
    assert options["seconds"]["max_value"] == 8.0 and not options["image"]["required"]
    assert commands["sonify"]["description_localizations"]["es-ES"] == t("cmd.sonify", "es")
    assert commands["Sonify this image"]["type"] == 3
    assert commands["Sonify this image"]["name_localizations"]["es-ES"] == "Sonificar esta imagen"

    await make_bot(discord={"sync_commands": True})  # global registration at start-up
    call = await fake.until(lambda: fake.find("PUT", rf"/applications/{BOT_ID}/commands"))
    assert len(call[0].json) == 4


async def test_refused_token_is_one_config_error(fake: FakeDiscord, make_bot: Any) -> None:
    fake.bot_token = "the-real-token"
    with pytest.raises(ConfigError, match=r"\[discord\] token was refused"):
        await make_bot()
    assert fake.identified == []


async def test_voice_message(fake: FakeDiscord, make_bot: Any) -> None:
    await make_bot(discord={"voice_message": True, "audio_format": "mp3"})
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("v.png", png_bytes(70))])
    voice = await fake.until(lambda: [m for m in fake.replies_to(posted["id"])
                                      if m["flags"] & VOICE])
    (att,) = voice[0]["attachments"]
    assert voice[0]["content"] == "" and att["filename"] == "voice-message.ogg"
    assert len(base64.b64decode(att["waveform"])) == 10  # one point per 100 ms, as Discord's
    assert abs(att["duration_secs"] - 1.0) < 0.05
    _, _, kind = read_clip(fake.file(att))
    assert kind == "OGG/OPUS"  # voice messages are always OGG/Opus
    (caption,) = [m for m in fake.replies_to(posted["id"]) if m["content"].startswith("🔊")]
    assert caption["components"] and not caption["attachments"]

    it = await fake.slash("sonify", upload=Upload("w.png", png_bytes(71)))
    follow = await fake.until(lambda: [m for m in it.followups if m["flags"] & VOICE])
    assert follow[0]["attachments"][0]["waveform"]
    assert it.original is not None and it.original["content"].startswith("🔊")

    # Where voice messages are not allowed, the clip still arrives, as a plain file.
    fake.no_voice_channels.add(OTHER)
    posted = await fake.send_message(OTHER, ALICE, "", [Upload("x.png", png_bytes(75))],
                                     mention_bot=True)
    (plain,) = await fake.until(lambda: [m for m in fake.replies_to(posted["id"])
                                         if m["attachments"]])
    assert not plain["flags"] & VOICE
    assert read_clip(fake.file(plain["attachments"][0]))[2] == "OGG/OPUS"
    it = await fake.slash("sonify", upload=Upload("y.png", png_bytes(76)), channel_id=OTHER)
    answer = await fake.until(lambda: it.original and it.original["attachments"]
                              and it.original)
    assert answer["content"].startswith("🔊") and answer["components"]
    assert read_clip(fake.file(answer["attachments"][0]))[2] == "OGG/OPUS"


async def test_progress_edits_are_throttled(fake: FakeDiscord, make_bot: Any) -> None:
    await make_bot(discord={"progress_interval_s": 60.0})
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("t.png", png_bytes(72))])
    await fake.until(lambda: [m for m in fake.replies_to(posted["id"]) if m["attachments"]])
    sent = [c.json.get("content", "") for c in fake.calls
            if c.method in ("POST", "PATCH") and c.path.startswith(f"/channels/{WATCHED}/")]
    # The queue position, then the answer: no progress edits within the interval.
    assert sent[0].startswith("Queued") and not any("Rendering" in s for s in sent)
    assert not fake.find("PATCH", rf"/channels/{WATCHED}/messages/\d+")


async def test_jobs_cut_off_by_a_crash_are_answered_after_restart(
        fake: FakeDiscord, make_bot: Any, tiny_pipeline: Any) -> None:
    gated = GatedPipeline(tiny_pipeline)
    first = await make_bot(pipeline=gated)
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("c.png", png_bytes(73))])
    it = await fake.slash("sonify", upload=Upload("d.png", png_bytes(74)))
    await asyncio.to_thread(gated.entered.wait, 10)
    await fake.until(lambda: it.original and it.original["content"])  # queued or started
    # Stop without finishing the work: the rows stay unfinished, as after a crash.
    await first.services.engine.stop(0.05)
    gated.gate.set()
    await first.stop()
    assert not [m for m in fake.replies_to(posted["id"]) if m["attachments"]]

    second = await make_bot()
    answer = await fake.until(lambda: [m for m in fake.replies_to(posted["id"])
                                       if m["attachments"]])
    assert str(answer[0]["message_reference"]["message_id"]) == posted["id"]
    # Interaction tokens are credentials and never stored, so the re-run slash job is
    # answered in its channel, mentioning the user who asked.
    follow = await fake.until(lambda: [m for m in fake.channel_messages(WATCHED)
                                       if m["attachments"] and f"<@{ALICE}>" in m["content"]])
    assert "🔊" in follow[0]["content"]
    # The mention notifies that user (the bot allows no other mentions).
    (sent,) = [c for c in fake.find("POST", rf"/channels/{WATCHED}/messages")
               if c.json.get("content") == follow[0]["content"]]
    assert [int(u) for u in sent.json["allowed_mentions"]["users"]] == [ALICE]
    assert not [m for m in it.followups if m["attachments"]]
    db = second.services.config.data_dir / "sonify.db"
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert it.token not in dump and TOKEN not in dump


async def test_interaction_tokens_stay_out_of_debug_logs(fake: FakeDiscord, make_bot: Any,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    for name in ("discord.http", "discord.webhook.async_"):
        caplog.set_level(logging.DEBUG, logger=name)
    await make_bot(discord={"voice_message": True})  # the voice follow-up goes via discord.http
    it = await fake.slash("sonify", upload=Upload("l.png", png_bytes(77)))
    await fake.until(lambda: [m for m in it.followups if m["flags"] & VOICE])
    assert f"/webhooks/{BOT_ID}/***" in caplog.text  # the URLs were logged, masked
    assert it.token not in caplog.text and TOKEN not in caplog.text


async def test_a_received_request_with_nowhere_to_answer_is_ended_and_frees_its_place(
        fake: FakeDiscord, make_bot: Any) -> None:
    """A request recorded before a restart, whose channel can no longer be found, is ended
    as interrupted — not left open holding its author's place within the limits."""
    bot = await make_bot(jobs={"per_user_concurrent": 1})
    assert bot.services is not None
    await bot.services.request_log.insert(RequestRecord(
        id="orphan000001", platform="discord", user_id=str(ALICE), chat_id="1",
        source_kind="attachment", status="received", created_at=time.time(),
        source={"kind": "attachment", "url": f"{fake.api_url}/nowhere.png"},
        reply_context={"kind": "message"}))  # no channel: nowhere to answer
    await bot.stop()
    await bot.start()

    async def ended() -> Any:
        # Polling: adapters take up such rows in tasks of their own; no event tells the test.
        while (row := await bot.request_row("orphan000001")).status == "received":  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return row

    row = await asyncio.wait_for(ended(), 20)
    assert (row.status, row.reason) == ("rejected", "interrupted")
    # Its author's one place is free: a new picture is answered, not refused as busy.
    message = await fake.send_message(WATCHED, ALICE, "", [Upload("new.png", png_bytes(95))])
    await fake.until(lambda: [m for m in fake.replies_to(message["id"]) if m["attachments"]],
                     timeout=30)


async def test_readiness_follows_the_gateway_session(fake: FakeDiscord, make_bot: Any) -> None:
    bot = await make_bot()
    adapter = bot.adapter
    async with asyncio.timeout(15):  # READY is handled on the client's own time
        while await adapter.ready() is not None:  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.02)
    assert adapter.client is not None and adapter.client.is_ready()
    await adapter.stop()
    assert await adapter.ready() == "not connected"
