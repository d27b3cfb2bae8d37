"""Moving pictures on Discord: a GIF or an MP4 attachment in, an MP4 reply with its sound out."""

from __future__ import annotations

import hashlib

from core.i18n import t
from tests.bot.discord.conftest import Bot
from tests.bot.discord.fake_discord import ALICE, WATCHED, FakeDiscord, Upload
from tests.bot.discord.test_interactions import buttons, done
from tests.core.audio.test_video import probe
from tests.core.intake.video_fixtures import animation, encode_video

DELAYS_MS = [100, 200, 100, 300, 100, 200]  # 1 s, variable delays


def video_answers(fake: FakeDiscord, message: dict) -> list[dict]:
    return [m for m in fake.replies_to(message["id"]) if m["attachments"]]


def check_mp4(data: bytes, frames: int, seconds: float) -> None:
    seen = probe(data)  # exactly one video and one audio stream
    assert len(seen.frame_times) == frames
    assert abs(seen.video_seconds - seconds) <= 0.1
    assert abs(seen.audio_seconds - seen.video_seconds) <= 0.1


async def test_a_gif_and_an_mp4_attachment_get_an_mp4_reply(fake: FakeDiscord, bot: Bot) -> None:
    gif = animation("GIF", DELAYS_MS)
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("dance.gif", gif, "image/gif")])
    (answer,) = await fake.until(lambda: video_answers(fake, posted), timeout=60)
    (att,) = answer["attachments"]
    assert att["filename"].endswith(".mp4")
    check_mp4(fake.file(att), len(DELAYS_MS), 1.0)
    assert answer["content"].startswith("🔊 ")
    request_id = buttons(answer)["Another take"].split(":")[-1]
    row = await bot.request_row(request_id)
    assert (row.status, row.input_kind, row.output_kind) == ("done", "animation", "video")
    assert row.image_sha256 == hashlib.sha256(gif).hexdigest()

    clip = encode_video(frames=30, rate=15, audio_seconds=2.0)
    it = await fake.slash("sonify", upload=Upload("clip.mp4", clip, "video/mp4"))
    answer = await fake.until(lambda: done(it), timeout=60)
    (att,) = answer["attachments"]
    assert att["filename"].endswith(".mp4")
    check_mp4(fake.file(att), 30, 2.0)
    row = await bot.request_row(buttons(answer)["Another take"].split(":")[-1])
    assert (row.input_kind, row.output_kind, row.source_kind) == ("video", "video",
                                                                   "attachment")
    assert row.reply_context["video_cap_bytes"] == 10_485_760  # the interaction's limit


async def test_a_damaged_video_is_refused_with_its_text_and_row(fake: FakeDiscord,
                                                                bot: Bot) -> None:
    broken = b"\x00\x00\x00\x18ftypmp42" + b"\0" * 64  # a header and nothing else
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("clip.mp4", broken,
                                                                  "video/mp4")])
    text = t("error.video_corrupt", "en")
    await fake.until(lambda: [m for m in fake.replies_to(posted["id"]) if text in m["content"]])
    assert bot.services is not None
    rows = await bot.services.request_log.rows_since(0, ["status", "reason", "source_kind"])
    assert [tuple(r) for r in rows] == [("rejected", "video_corrupt", "attachment")]
