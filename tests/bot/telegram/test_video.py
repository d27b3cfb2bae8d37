"""Moving pictures on Telegram: an animation or a video in, the same video with its sound out."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.bot.telegram.conftest import ANA, ELENA, Harness, StartBot, delivered
from tests.bot.telegram.fake_bot_api import Call
from tests.core.audio.test_video import probe
from tests.core.intake.video_fixtures import encode_video

FRAMES, RATE = 24, 12  # 2 s


def media(fake: Any, data: bytes, **extra: Any) -> dict[str, Any]:
    file_id = fake.add_file(data)
    thumb = fake.add_file(b"not the video you want")
    return {"file_id": file_id, "file_unique_id": f"v{file_id}", "width": 64, "height": 48,
            "duration": 2, "file_size": len(data), "mime_type": "video/mp4",
            "thumbnail": {"file_id": thumb, "file_unique_id": f"t{thumb}", "width": 32,
                          "height": 24}, **extra}


async def video_for(bot: Harness, msg: dict[str, Any], within: float = 60.0) -> Call:
    return await bot.fake.wait_for(
        "sendVideo", lambda c: c.reply_to == msg["message_id"] and delivered(c), within=within)


def request_id_of(call: Call) -> str:
    return str(call.buttons[0]["callback_data"].split(":", 1)[1])


def check_answer(call: Call, clip: bytes) -> None:
    """One video stream with the input's frames, one audio stream as long."""
    after = probe(call.files["video"])  # exactly one video and one audio stream
    assert len(after.frame_times) == FRAMES
    assert abs(after.video_seconds - FRAMES / RATE) <= 1 / RATE
    assert abs(after.audio_seconds - after.video_seconds) <= 0.1
    assert after.audio_codec == "aac"


async def test_an_animation_and_a_video_are_answered_with_send_video(bot: Harness) -> None:
    fake = bot.fake
    gif_as_mp4 = encode_video(frames=FRAMES, rate=RATE)  # how Telegram delivers a GIF
    animation = media(fake, gif_as_mp4, file_name="cat.gif.mp4")
    msg = await bot.send(ANA, animation=animation, document=animation)
    answer = await video_for(bot, msg)
    check_answer(answer, gif_as_mp4)
    assert answer.params["supports_streaming"] in (True, "true", "True")
    assert answer.params["caption"].startswith("🔊 ")
    assert [b["text"] for b in answer.buttons] == ["Another take", "Use my words"]
    assert not fake.calls_of("sendVoice")  # the video is the answer
    row = await bot.row(request_id_of(answer))
    assert (row.status, row.source_kind, row.input_kind, row.output_kind) == (
        "done", "animation", "animation", "video")
    assert row.image_sha256 == hashlib.sha256(gif_as_mp4).hexdigest()
    assert row.input_seconds is not None and abs(row.input_seconds - 2.0) < 0.01
    assert row.options is not None and row.options["seconds"] == 2.0  # the clip's length

    clip = encode_video(frames=FRAMES, rate=RATE, audio_seconds=2.0, noise=True)
    msg = await bot.send(ANA, video=media(fake, clip))
    answer = await video_for(bot, msg)
    check_answer(answer, clip)
    row = await bot.row(request_id_of(answer))
    assert (row.input_kind, row.output_kind, row.sound_fit) == ("video", "video", "whole")

    # "Another take" on the video: a new sound in the same video.
    taken = len(fake.calls)
    await bot.press(f"again:{row.id}", ANA, answer.result)
    again = await fake.wait_for("sendVideo", delivered, after=taken, within=60)
    check_answer(again, clip)
    retake = await bot.row(request_id_of(again))
    assert (retake.source_kind, retake.caption, retake.output_kind) == (
        "retake", row.caption, "video")
    assert retake.seed != row.seed


async def test_a_video_too_long_is_refused_in_the_users_language(start_bot: StartBot) -> None:
    bot = await start_bot(video={"max_seconds": 1.0})
    msg = await bot.send(ELENA, video=media(bot.fake, encode_video(frames=FRAMES, rate=RATE)))
    text = await bot.text_for(msg, "demasiado largo")
    assert "1 segundos" in text
    # One larger than the download limit is refused before it is downloaded.
    big = media(bot.fake, b"\0" * 64, file_size=30_000_000)
    msg = await bot.send(ELENA, video=big)
    assert "20 MB" in await bot.text_for(msg, "demasiado grande")
    await bot.settled()
    assert not bot.fake.calls_of("sendVideo")
    assert not [c for c in bot.fake.calls_of("getFile") if c.params["file_id"] == big["file_id"]]
    assert bot.services is not None
    rows = await bot.services.request_log.rows_since(0, ["status", "reason", "lang"])
    assert sorted(tuple(r) for r in rows) == [("rejected", "too_large", "es"),
                                              ("rejected", "video_too_long", "es")]
