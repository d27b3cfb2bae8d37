"""Jobs cut off by a restart are answered by the next process, in the same conversation."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.bot.telegram.conftest import ANA, ELENA, GatedPipeline, Harness, StartBot


async def crash_mid_job(start_bot: StartBot, tiny_pipeline: Any,
                        user: dict[str, Any]) -> tuple[Harness, dict[str, Any], int]:
    """Start a job, then stop the bot while it renders (its row stays unfinished)."""
    gated = GatedPipeline(tiny_pipeline)
    bot = await start_bot(pipeline=gated)
    msg = await bot.send_photo(user)
    assert await asyncio.to_thread(gated.entered.wait, 20)
    status = bot.fake.calls_of("sendMessage")[0]
    await bot.stop(engine_timeout=0.05)  # gives up on the running batch, like a crash
    gated.gate.set()
    return bot, msg, status.result["message_id"]


async def test_job_is_answered_after_a_restart(start_bot: StartBot, tiny_pipeline: Any) -> None:
    bot, msg, status_id = await crash_mid_job(start_bot, tiny_pipeline, ANA)
    # Stopping is not failing: nobody was told to send the picture again.
    assert not any("restart" in c.text for c in bot.fake.calls)
    bot.pipeline = tiny_pipeline
    await bot.start()
    voice = await bot.voice_for(msg)
    row = await bot.row(voice.buttons[0]["callback_data"].split(":", 1)[1])
    assert row.status == "done" and row.source_kind == "photo"
    deleted = await bot.fake.wait_for("deleteMessage")
    assert int(deleted.params["message_id"]) == status_id


async def test_job_without_its_image_is_reported_interrupted(start_bot: StartBot,
                                                             tiny_pipeline: Any) -> None:
    bot, msg, status_id = await crash_mid_job(start_bot, tiny_pipeline, ELENA)
    for spooled in (bot.config.data_dir / "spool").glob("*.png"):
        spooled.unlink()
    bot.pipeline = tiny_pipeline
    await bot.start()
    text = await bot.text_for(msg, "reinició")
    assert text == ("Lo siento: el bot se reinició mientras trabajaba en tu imagen. "
                    "Envíala de nuevo, por favor.")
    edit = await bot.fake.wait_for("editMessageText", lambda c: c.text == text)
    assert int(edit.params["message_id"]) == status_id
    assert bot.fake.calls_of("sendVoice") == []
