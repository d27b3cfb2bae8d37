"""The status message while a clip renders, and staying up when Telegram misbehaves."""

from __future__ import annotations

import asyncio
import io
import itertools
from typing import Any

import soundfile as sf

from tests.bot.telegram.conftest import ANA, BOB, GatedPipeline, Harness, StartBot


def status_edits(bot: Harness) -> list[str]:
    return [c.text for c in bot.fake.calls_of("editMessageText")]


async def test_progress_is_shown_without_repeats(start_bot: StartBot) -> None:
    bot = await start_bot(telegram={"progress_interval_s": 0.0})
    msg = await bot.send_photo(ANA)
    await bot.voice_for(msg)
    await bot.fake.wait_for("deleteMessage")
    edits = status_edits(bot)
    assert "Listening to your picture…" in edits
    assert "Rendering sound… 100%" in edits
    assert all(a != b for a, b in itertools.pairwise(edits))
    assert edits.index("Listening to your picture…") < edits.index("Rendering sound… 100%")


async def test_progress_edits_are_rate_limited(start_bot: StartBot, tiny_pipeline: Any) -> None:
    gated = GatedPipeline(tiny_pipeline)
    bot = await start_bot(telegram={"progress_interval_s": 1.0}, pipeline=gated)
    msg = await bot.send_photo(ANA)
    assert await asyncio.to_thread(gated.entered.wait, 20)
    # "Listening…" arrives too soon after "Queued" and is shown once the interval is over.
    edit = await bot.fake.wait_for("editMessageText")
    status = bot.fake.calls_of("sendMessage")[0]
    assert edit.text == "Listening to your picture…"
    assert edit.at - status.at >= 0.9
    gated.gate.set()
    await bot.voice_for(msg)
    edits = bot.fake.calls_of("editMessageText")
    assert all(b.at - a.at >= 0.9 for a, b in itertools.pairwise(edits))


async def test_edit_flood_control_is_respected(start_bot: StartBot, tiny_pipeline: Any) -> None:
    gated = GatedPipeline(tiny_pipeline)
    bot = await start_bot(telegram={"progress_interval_s": 0.0}, pipeline=gated)
    bot.fake.fail_next("editMessageText", status=429, retry_after=30)
    msg = await bot.send_photo(ANA)
    assert await asyncio.to_thread(gated.entered.wait, 20)
    await bot.fake.wait_for("editMessageText")  # refused with retry_after=30
    gated.gate.set()
    await bot.voice_for(msg)  # the answer is not held up by a status edit
    await bot.fake.wait_for("deleteMessage")
    assert len(bot.fake.calls_of("editMessageText")) == 1  # no edit inside the 30 s


async def test_a_failed_send_does_not_stop_the_bot(bot: Harness) -> None:
    bot.fake.fail_next("sendVoice", status=400, retry_after=None,
                       description="Bad Request: wrong file identifier")
    first = await bot.send_photo(ANA)
    assert await bot.text_for(first, "Sorry") == ("Sorry, generating the sound failed. "
                                                  "Please try again.")
    second = await bot.send_photo(BOB)
    await bot.voice_for(second)


async def test_network_errors_are_retried(bot: Harness) -> None:
    bot.fake.fail_next("sendVoice", status=502, retry_after=None,
                       description="Bad Gateway", times=2)
    msg = await bot.send_photo(ANA)
    await bot.voice_for(msg)
    assert len(bot.fake.calls_of("sendVoice")) == 3


async def test_voice_notes_refused_falls_back_to_audio(bot: Harness) -> None:
    bot.fake.fail_next("sendVoice", status=400, retry_after=None,
                       description="Bad Request: VOICE_MESSAGES_FORBIDDEN")
    msg = await bot.send_photo(ANA)
    audio = await bot.fake.wait_for("sendAudio", lambda c: c.reply_to == msg["message_id"])
    assert sf.info(io.BytesIO(audio.files["audio"])).format == "MP3"
    assert [b["callback_data"].split(":")[0] for b in audio.buttons] == ["again", "words"]


async def test_recording_action_is_renewed_while_rendering(
        start_bot: StartBot, monkeypatch: Any) -> None:
    """A render longer than the action's ~5 s keeps showing "recording voice…"."""
    import bot.telegram.replies

    monkeypatch.setattr(bot.telegram.replies, "ACTION_RENEW_S", 0.0)
    harness = await start_bot(telegram={"progress_interval_s": 0.0})
    msg = await harness.send_photo(ANA)
    await harness.voice_for(msg)
    actions = [c.params.get("action") for c in harness.fake.calls_of("sendChatAction")]
    assert actions.count("record_voice") >= 3  # at once, then renewed as steps complete
    assert actions[-1] == "upload_voice"
