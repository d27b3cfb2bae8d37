"""What users see when something is wrong: plain words, private where Discord allows it."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from PIL import Image

from core.storage.migrate import sqlite_file
from tests.bot.discord.conftest import BrokenPipeline, GatedPipeline, png_bytes
from tests.bot.discord.fake_discord import (
    ALICE,
    BOB,
    CAROL,
    EPHEMERAL,
    WATCHED,
    FakeDiscord,
    Interaction,
    Upload,
)
from tests.local_servers import Unwritable, sqlite_files


def texts_to(fake: FakeDiscord, message: dict) -> list[str]:
    return [m["content"] for m in fake.replies_to(message["id"])]


async def reply_text(fake: FakeDiscord, message: dict, start: str) -> str:
    """Wait for a reply to `message` whose text starts with `start`."""
    found = await fake.until(lambda: [s for s in texts_to(fake, message) if s.startswith(start)])
    assert "Traceback" not in found[0]
    return found[0]


async def private_note(fake: FakeDiscord, it: Interaction) -> str:
    """The ephemeral text an interaction ended with (direct reply or follow-up)."""
    def probe() -> str | None:
        for cb in it.callbacks:
            data = cb.json.get("data") or {}
            if cb.json["type"] == 4 and data.get("flags", 0) & EPHEMERAL:
                return data["content"]
        for msg in it.followups:
            if msg["flags"] & EPHEMERAL:
                assert it.original is None or it.original.get("_deleted")
                return msg["content"]
        return None

    return await fake.until(probe)


async def rejected_reasons(bot: Any) -> list[str]:
    rows = await bot.services.request_log.rows_since(0.0, ["status", "reason"])
    return [r.reason for r in rows if r.status == "rejected"]


def ico_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, "ICO")
    return out.getvalue()


async def test_image_problems(fake: FakeDiscord, make_bot: Any) -> None:
    bot = await make_bot(images={"max_bytes": 5_000})
    big = png_bytes(20, size=120)
    assert len(big) > 5_000

    # /sonify: refused before deferring (instant checks), privately.
    it = await fake.slash("sonify", upload=Upload("notes.txt", b"hello there", "text/plain"))
    assert (await private_note(fake, it)).startswith("That isn't an image.")
    it = await fake.slash("sonify", upload=Upload("huge.png", big))
    assert await private_note(fake, it) == "That file is too large — the limit is 0.005 MB."
    assert it.callbacks[0].json["type"] == 4  # no defer, no download needed
    assert not fake.find("GET", r"/cdn/attachments/.*/huge\.png")
    it = await fake.slash("sonify")
    assert (await private_note(fake, it)).startswith("Attach an image or give a link")
    it = await fake.slash("sonify", upload=Upload("icon.ico", ico_bytes(), "image/x-icon"))
    assert (await private_note(fake, it)).startswith("ICO files aren't supported.")

    # Posted images in the watched channel: a reply to the message.
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("icon.ico", ico_bytes(),
                                                                 "image/x-icon")])
    await reply_text(fake, posted, "ICO files aren't supported.")
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("fake.png", b"not a picture")])
    await reply_text(fake, posted, "That isn't an image.")
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("big.png", big)])
    await reply_text(fake, posted, "That file is too large")
    # A mention with no picture at all.
    posted = await fake.send_message(WATCHED, ALICE, "hello", mention_bot=True)
    await reply_text(fake, posted, "I couldn't find an image in that message.")

    reasons = await rejected_reasons(bot)
    for code in ("not_image", "too_large", "no_image_option", "unsupported_format", "no_image"):
        assert code in reasons


async def test_blocked_link(fake: FakeDiscord, make_bot: Any) -> None:
    await make_bot(images={"allow_private_networks": False})
    link = fake.host("inside.png", png_bytes(21))  # 127.0.0.1: a private address
    it = await fake.slash("sonify", {"url": link})
    assert (await private_note(fake, it)).startswith("I can't fetch that link")
    assert it.callbacks[0].json["type"] == 5  # deferred, then the note replaced the answer
    posted = await fake.send_message(WATCHED, ALICE, f"look {link}")
    await reply_text(fake, posted, "I can't fetch that link")
    assert not fake.find("GET", "/cdn/inside.png")
    # Attachments come from Discord itself, not from a link: they still work.
    ok = await fake.send_message(WATCHED, ALICE, "", [Upload("ok.png", png_bytes(22))])
    await fake.until(lambda: [m for m in fake.replies_to(ok["id"]) if m["attachments"]])


async def test_busy_and_per_user_limits(fake: FakeDiscord, make_bot: Any,
                                        tiny_pipeline: Any) -> None:
    gated = GatedPipeline(tiny_pipeline)
    await make_bot(pipeline=gated, jobs={"max_queue": 1, "max_batch": 1,
                                         "per_user_concurrent": 1})
    first = await fake.send_message(WATCHED, ALICE, "", [Upload("1.png", png_bytes(31))])
    await asyncio.to_thread(gated.entered.wait, 10)  # alice's job is rendering
    second = await fake.send_message(WATCHED, BOB, "", [Upload("2.png", png_bytes(32))])
    await reply_text(fake, second, "Queued — #1 in line")
    third = await fake.send_message(WATCHED, CAROL, "", [Upload("3.png", png_bytes(33))])
    text = await reply_text(fake, third, "I'm very busy right now.")
    assert text.endswith(" s.") or text.endswith(" min.")
    busy = await fake.slash("sonify", upload=Upload("5.png", png_bytes(35)), author=CAROL)
    assert (await private_note(fake, busy)).startswith("I'm very busy right now.")
    again = await fake.slash("sonify", upload=Upload("4.png", png_bytes(34)), author=ALICE)
    note = await private_note(fake, again)
    assert note.startswith("You already have requests in progress. Try again in about")
    gated.gate.set()
    for msg in (first, second):
        await fake.until(lambda m=msg: [r for r in fake.replies_to(m["id"]) if r["attachments"]])


async def test_hourly_limit_says_when(fake: FakeDiscord, make_bot: Any) -> None:
    await make_bot(jobs={"per_user_per_hour": 1})
    first = await fake.send_message(WATCHED, ALICE, "", [Upload("1.png", png_bytes(41))])
    await fake.until(lambda: [r for r in fake.replies_to(first["id"]) if r["attachments"]])
    second = await fake.send_message(WATCHED, ALICE, "", [Upload("2.png", png_bytes(42))])
    text = await reply_text(fake, second, "You've reached the limit of requests per hour.")
    assert text.endswith("Try again in 60 min.")


async def test_generation_failed(fake: FakeDiscord, make_bot: Any) -> None:
    bot = await make_bot(pipeline=BrokenPipeline())
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("x.png", png_bytes(51))])
    await reply_text(fake, posted, "Sorry, generating the sound failed. Please try again.")
    it = await fake.slash("sonify", upload=Upload("y.png", png_bytes(52)))
    assert await private_note(fake, it) == "Sorry, generating the sound failed. Please try again."
    rows = await bot.services.request_log.rows_since(0.0, ["status", "reason"])
    assert [r.reason for r in rows if r.status == "failed"] == ["failed", "failed"]


async def test_missing_permissions_moves_to_dm(fake: FakeDiscord, make_bot: Any) -> None:
    await make_bot()
    fake.forbidden_channels.add(WATCHED)
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("p.png", png_bytes(61))])
    dm = fake.dm_channel(ALICE)
    answer = await fake.until(lambda: [m for m in fake.channel_messages(dm) if m["attachments"]])
    notes = [m["content"] for m in fake.channel_messages(dm)]
    assert notes[0] == ("I don't have permission to post here "
                        "(I need to send messages and attach files).")
    assert fake.file(answer[0]["attachments"][0])[:4] == b"OggS"
    assert fake.find("POST", rf"/channels/{WATCHED}/messages")  # it tried the channel first
    assert fake.replies_to(posted["id"]) == []


async def test_expired_interaction_token_answers_in_channel(fake: FakeDiscord,
                                                            make_bot: Any) -> None:
    await make_bot()
    url = fake.host("late.png", png_bytes(62))
    it = await fake.slash("sonify", {"url": url})
    fake.expired_tokens.add(it.token)  # as if the job had waited more than 15 minutes
    answer = await fake.until(lambda: [m for m in fake.channel_messages(WATCHED)
                                       if m["attachments"]])
    assert answer[0]["content"].startswith(f"<@{ALICE}> 🔊 ")
    assert it.callbacks[0].json["type"] == 5


async def test_requests_refused_during_shutdown_are_rejected_rows(fake: FakeDiscord,
                                                                  make_bot: Any) -> None:
    """The engine stops first on shutdown; a posted image and a /sonify then are refused."""
    bot = await make_bot()
    await bot.services.engine.stop(1.0)
    posted = await fake.send_message(WATCHED, ALICE, "", [Upload("a.png", png_bytes(61))])
    await reply_text(fake, posted, "The bot is restarting. Please try again in a minute.")
    it = await fake.slash("sonify", upload=Upload("b.png", png_bytes(62)), author=BOB)
    assert await private_note(fake, it) == "The bot is restarting. Please try again in a minute."
    assert await rejected_reasons(bot) == ["shutting_down", "shutting_down"]


async def test_words_that_are_not_text_get_the_catalogue_text(fake: FakeDiscord,
                                                              make_bot: Any) -> None:
    """"Use my words" with a lone surrogate or a NUL: the plain refusal, a `words_invalid`
    row — never a failure (neither database can store such words)."""
    bot = await make_bot()
    it = await fake.slash("sonify", upload=Upload("b.png", png_bytes(14)))
    answer = await fake.until(lambda: it.original if it.original and
                              it.original["attachments"] else None)
    words_id = next(c["custom_id"] for row in answer["components"]
                    for c in row["components"] if c["label"] == "Use my words")
    for words in ("\ud800 x", "x\u0000y", "\x1b]0;owned\x07"):
        opened = await fake.click(answer, words_id)
        await fake.until(lambda opened=opened: opened.callbacks)
        submitted = await fake.submit_modal(opened.callbacks[0].json["data"], [words])
        note = await private_note(fake, submitted)
        assert note.startswith("Your description holds characters that are not text"), note
    assert await rejected_reasons(bot) == ["words_invalid"]  # three refusals, one row
    rows = await bot.services.request_log.rows_since(0.0)
    assert [r.times for r in rows if r.status == "rejected"] == [3]
async def test_requests_the_log_cannot_take_are_try_again_in_a_moment(
        fake: FakeDiscord, make_bot: Any, caplog: Any) -> None:
    """The SQLite file unwritable for real (`chattr +i`): a posted image and a /sonify are
    not taken, and the user is asked to try again in a moment — in plain words, no
    traceback; once the file can be written, the next one is answered."""
    bot = await make_bot()
    database = sqlite_file(bot.config.database_url)
    assert database is not None
    Unwritable.check(database.parent)
    fault = sqlite_files(database)
    fault.apply()
    try:
        posted = await fake.send_message(WATCHED, ALICE, "", [Upload("a.png", png_bytes(71))])
        await reply_text(fake, posted, "I can't take new requests for a moment. Please try "
                                       "again in about 5 s.")
        it = await fake.slash("sonify", upload=Upload("b.png", png_bytes(72)), author=BOB)
        assert await private_note(fake, it) == ("I can't take new requests for a moment. "
                                                "Please try again in about 5 s.")
    finally:
        fault.restore()
    again = await fake.send_message(WATCHED, ALICE, "", [Upload("c.png", png_bytes(73))])
    await fake.until(lambda: [r for r in fake.replies_to(again["id"]) if r["attachments"]])
    assert "Traceback" not in caplog.text
    rows = await bot.services.request_log.rows_since(0.0, ["status"])
    assert [r.status for r in rows] == ["done"]  # the two refused ones were never recorded
