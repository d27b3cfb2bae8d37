"""Images posted as messages: watched channels, mentions, DMs, links, embeds."""

from __future__ import annotations

import pytest

from tests.bot.discord.conftest import Bot, png_bytes, read_clip
from tests.bot.discord.fake_discord import (
    ALICE,
    BOB,
    BOT_ID,
    OTHER,
    WATCHED,
    FakeDiscord,
    Upload,
)


def answers(fake: FakeDiscord, message: dict) -> list[dict]:
    """The bot's replies to `message` that carry a file."""
    return [m for m in fake.replies_to(message["id"]) if m["attachments"]]


async def test_attachment_in_watched_channel_gets_caption_and_clip(fake: FakeDiscord,
                                                                   bot: Bot) -> None:
    posted = await fake.send_message(WATCHED, ALICE, "look", [Upload("cat.png", png_bytes(1))])

    (answer,) = await fake.until(lambda: answers(fake, posted))
    assert answer["author"]["id"] == str(BOT_ID)
    ref = answer["message_reference"]
    assert str(ref["message_id"]) == posted["id"] and str(ref["channel_id"]) == str(WATCHED)
    assert answer["content"].startswith("🔊 ")
    (att,) = answer["attachments"]
    assert att["filename"].endswith(".ogg")
    audio, rate, kind = read_clip(fake.file(att))
    assert kind == "OGG/OPUS"
    assert abs(len(audio) / rate - 1.0) < 0.05  # [generation] seconds = 1 in the tiny config
    # The first reply showed the queue position, was edited with progress, then gave way
    # to the answer.
    statuses = [c for c in fake.find("POST", rf"/channels/{WATCHED}/messages")
                if "Queued" in (c.json or {}).get("content", "")]
    assert statuses, "no queue-position reply"
    (status,) = await fake.until(lambda: [
        m for m in fake.messages.values() if m.get("_deleted")
        and str((m.get("message_reference") or {}).get("message_id")) == posted["id"]])
    assert status["_edits"] >= 1
    assert status["content"].startswith(("Listening to your picture", "Rendering sound"))
    request_id = answer["components"][0]["components"][0]["custom_id"].split(":")[-1]
    row = await bot.request_row(request_id)
    assert row.status == "done" and row.platform == "discord"
    assert answer["content"] == f"🔊 {row.caption}"
    assert row.reply_context["message_id"] == posted["id"]


async def test_unwatched_channel_is_ignored_unless_mentioned(fake: FakeDiscord,
                                                             bot: Bot) -> None:
    quiet = await fake.send_message(OTHER, ALICE, "", [Upload("a.png", png_bytes(2))])
    loud = await fake.send_message(OTHER, ALICE, "what is this?", [Upload("b.png", png_bytes(3))],
                                   mention_bot=True)
    await fake.until(lambda: answers(fake, loud))
    assert fake.replies_to(quiet["id"]) == []
    assert not any(quiet["attachments"][0]["url"].endswith(c.path) for c in fake.calls)


async def test_direct_message_is_answered(fake: FakeDiscord, bot: Bot) -> None:
    posted = await fake.send_message(None, ALICE, "", [Upload("dm.png", png_bytes(4))])
    (answer,) = await fake.until(lambda: answers(fake, posted))
    assert answer["channel_id"] == posted["channel_id"]
    assert fake.file(answer["attachments"][0])[:4] == b"OggS"


async def test_link_and_embed_images_are_answered(fake: FakeDiscord, bot: Bot) -> None:
    link = fake.host("pics/dog.png", png_bytes(5))
    embedded = fake.host("pics/embed.png", png_bytes(6))
    posted = await fake.send_message(WATCHED, ALICE, f"see {link}!",
                                     embeds=[{"type": "rich", "image": {"url": embedded}}])
    replies = await fake.until(lambda: len(answers(fake, posted)) == 2 and answers(fake, posted))
    assert all(r["attachments"][0]["filename"].endswith(".ogg") for r in replies)
    assert fake.find("GET", "/cdn/pics/dog.png") and fake.find("GET", "/cdn/pics/embed.png")

    # A link to a web page in a watched channel is just chat: no reply (but a mention gets one).
    page = fake.host("page.html", b"<!doctype html><html></html>", "text/html")
    chat = await fake.send_message(WATCHED, ALICE, f"read {page}")
    asked = await fake.send_message(WATCHED, ALICE, f"and {page}?", mention_bot=True)
    # Recorded first ("Queued"), then the status line becomes the refusal.
    await fake.until(lambda: [m for m in fake.replies_to(asked["id"])
                              if m["content"].startswith("HTML files aren't supported.")])
    assert fake.find("GET", "/cdn/page.html") and fake.replies_to(chat["id"]) == []
    # So is a dead link (HTTP 404) and one whose host cannot be reached.
    dead = await fake.send_message(WATCHED, ALICE, f"old {fake.url}/cdn/gone.png")
    nowhere = await fake.send_message(WATCHED, ALICE, "see http://sonify-test.invalid/a.png")
    mark = await fake.send_message(WATCHED, ALICE, "", [Upload("m.png", png_bytes(7))])
    await fake.until(lambda: answers(fake, mark))  # later messages are answered by now
    assert fake.find("GET", "/cdn/gone.png")
    assert fake.replies_to(dead["id"]) == [] and fake.replies_to(nowhere["id"]) == []


@pytest.mark.parametrize("fmt", ["mp3"])
async def test_mp3_when_configured(fake: FakeDiscord, make_bot, fmt: str) -> None:
    await make_bot(discord={"audio_format": fmt})
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("m.png", png_bytes(7))])
    (answer,) = await fake.until(lambda: answers(fake, posted))
    att = answer["attachments"][0]
    assert att["filename"].endswith(".mp3")
    audio, _, kind = read_clip(fake.file(att))
    assert kind.startswith("MP3") and len(audio) > 0


async def test_images_per_message_are_capped_and_take_turns(fake: FakeDiscord,
                                                           make_bot) -> None:
    await make_bot(discord={"max_images_per_message": 2}, jobs={"per_user_concurrent": 1})
    ups = [Upload(f"{i}.png", png_bytes(80 + i)) for i in range(3)]
    posted = await fake.send_message(WATCHED, ALICE, "", ups)
    await fake.until(lambda: len(answers(fake, posted)) == 2)
    texts = [m["content"] for m in fake.replies_to(posted["id"])]
    assert not any("already have requests" in s for s in texts)
    assert not fake.find("GET", r"/cdn/attachments/.*/2\.png")  # the third is over the cap


async def test_replies_count_only_with_a_written_mention(fake: FakeDiscord, bot: Bot) -> None:
    posted = await fake.send_message(OTHER, ALICE, "", [Upload("r.png", png_bytes(8))],
                                      mention_bot=True)
    (answer,) = await fake.until(lambda: answers(fake, posted))
    # Replying to the bot pings it, but is not a request: no "no image" reply.
    thanks = await fake.send_message(OTHER, ALICE, "nice!", reply_to=answer)
    # "@Sonify" in reply to someone's picture answers that picture.
    picture = await fake.send_message(OTHER, BOB, "", [Upload("q.png", png_bytes(9))])
    asked = await fake.send_message(OTHER, ALICE, "what does this sound like?",
                                    reply_to=picture, mention_bot=True)
    (reply,) = await fake.until(lambda: answers(fake, asked))
    assert fake.file(reply["attachments"][0])[:4] == b"OggS"
    assert fake.find("GET", r"/cdn/attachments/.*/q\.png")
    assert fake.replies_to(thanks["id"]) == []
    assert [m for m in fake.replies_to(picture["id"]) if m["author"]["id"] == str(BOT_ID)] == []
