"""/sonify, the message command, the buttons and the form, /stats, languages."""

from __future__ import annotations

from typing import Any

from tests.bot.discord.conftest import Bot, png_bytes, read_clip
from tests.bot.discord.fake_discord import (
    ADMIN,
    ALICE,
    BOB,
    EPHEMERAL,
    WATCHED,
    FakeDiscord,
    Interaction,
    Upload,
)


def done(it: Interaction) -> dict | None:
    """The interaction's original response once it carries the clip."""
    msg = it.original
    return msg if msg and msg["attachments"] and not msg.get("_deleted") else None


def buttons(message: dict) -> dict[str, str]:
    """label -> custom id of the buttons under a message."""
    return {c["label"]: c["custom_id"] for row in message["components"]
            for c in row["components"]}


def statuses(fake: FakeDiscord, it: Interaction) -> list[str]:
    """Texts the bot put into the original response, in order."""
    return [c.json["content"] for c in fake.find("PATCH", rf"/webhooks/\d+/{it.token}/messages/"
                                                           "@original")
            if c.json and "content" in c.json]


async def check_clip(fake: FakeDiscord, message: dict, seconds: float) -> bytes:
    (att,) = message["attachments"]
    data = fake.file(att)
    audio, rate, kind = read_clip(data)
    assert kind == "OGG/OPUS"
    assert abs(len(audio) / rate - seconds) < 0.05
    return data


async def test_slash_with_attachment_defers_first_then_answers(fake: FakeDiscord,
                                                               bot: Bot) -> None:
    it = await fake.slash("sonify", {"seconds": 2.0, "seed": 7},
                          upload=Upload("cat.png", png_bytes(10)))
    answer = await fake.until(lambda: done(it))

    first = it.callbacks[0]
    assert first.json["type"] == 5  # deferred, "thinking"
    download = fake.find("GET", r"/cdn/attachments/.*/cat\.png")[0]
    assert first.seq < download.seq, "deferred only after the slow download"
    assert any(s.startswith("Queued — #1") for s in statuses(fake, it))
    await check_clip(fake, answer, 2.0)
    assert answer["content"].startswith("🔊 ")
    labels = buttons(answer)
    assert set(labels) == {"Another take", "Use my words"}
    request_id = labels["Another take"].split(":")[-1]
    row = await bot.request_row(request_id)
    assert (row.status, row.seed, row.source_kind) == ("done", 7, "attachment")
    assert answer["content"] == f"🔊 {row.caption}"
    assert row.reply_context["kind"] == "interaction"


async def test_slash_with_url_and_message_command(fake: FakeDiscord, bot: Bot) -> None:
    url = fake.host("p/tree.png", png_bytes(11))
    it = await fake.slash("sonify", {"url": url})
    answer = await fake.until(lambda: done(it))
    assert it.callbacks[0].json["type"] == 5
    assert it.callbacks[0].seq < fake.find("GET", "/cdn/p/tree.png")[0].seq
    await check_clip(fake, answer, 1.0)

    posted = await fake.send_message(WATCHED, BOB, "no bot here")  # text only: no answer
    empty = await fake.context_menu("Sonify this image", posted, author=ALICE)
    await fake.until(lambda: empty.callbacks)
    refusal = empty.callbacks[0].json
    assert refusal["type"] == 4 and refusal["data"]["flags"] & EPHEMERAL
    assert refusal["data"]["content"] == "I couldn't find an image in that message."
    target = await fake.send_message(WATCHED, BOB, "", [Upload("x.png", png_bytes(12))])
    menu = await fake.context_menu("Sonify this image", target, author=ALICE)
    answer = await fake.until(lambda: done(menu))
    assert menu.callbacks[0].json["type"] == 5
    assert menu.callbacks[0].seq < fake.find("GET", r"/cdn/attachments/.*/x\.png")[0].seq
    await check_clip(fake, answer, 1.0)
    assert fake.replies_to(posted["id"]) == []


async def test_slash_in_dm(fake: FakeDiscord, bot: Bot) -> None:
    it = await fake.slash("sonify", upload=Upload("d.png", png_bytes(13)), channel_id=None)
    answer = await fake.until(lambda: done(it))
    assert answer["channel_id"] == str(fake.dm_channel(ALICE))


async def test_buttons_and_form_survive_a_restart(fake: FakeDiscord, make_bot: Any) -> None:
    bot = await make_bot()
    it = await fake.slash("sonify", upload=Upload("b.png", png_bytes(14)))
    answer = await fake.until(lambda: done(it))
    ids = buttons(answer)
    first_id = ids["Another take"].split(":")[-1]
    first = await bot.request_row(first_id)

    # Someone else presses a button: a private refusal, nothing rendered.
    other = await fake.click(answer, ids["Another take"], author=BOB)
    await fake.until(lambda: other.callbacks)
    refusal = other.callbacks[0].json
    assert refusal["type"] == 4 and refusal["data"]["flags"] & EPHEMERAL
    assert "Only the person who asked" in refusal["data"]["content"]

    # "Another take": same caption, new seed.
    again = await fake.click(answer, ids["Another take"])
    retake = await fake.until(lambda: done(again))
    assert again.callbacks[0].json["type"] == 5
    row = await bot.request_row(buttons(retake)["Another take"].split(":")[-1])
    assert row.caption == first.caption and row.seed != first.seed
    assert row.source_kind == "retake"

    # "Use my words" opens a form...
    words = await fake.click(answer, ids["Use my words"])
    await fake.until(lambda: words.callbacks)
    modal = words.callbacks[0].json
    assert modal["type"] == 9 and modal["data"]["title"] == "Use my words"

    # ...and the bot restarts (same database) while the user types: it still works.
    await bot.stop()
    bot = await make_bot()
    submitted = await fake.submit_modal(modal["data"], ["rain on a tin roof"])
    mine = await fake.until(lambda: done(submitted))
    assert submitted.callbacks[0].json["type"] == 5
    assert "rain on a tin roof" in mine["content"]
    row = await bot.request_row(buttons(mine)["Another take"].split(":")[-1])
    assert row.prompt == "rain on a tin roof" and row.source_kind == "text"

    again = await fake.click(answer, ids["Another take"])  # old buttons after the restart
    await fake.until(lambda: done(again))
    words = await fake.click(answer, ids["Use my words"])
    await fake.until(lambda: words.callbacks)
    assert words.callbacks[0].json["type"] == 9

    # A stranger submitting a form for someone else's request is refused too.
    forged = await fake.submit_modal(modal["data"], ["birds"], author=BOB)
    await fake.until(lambda: forged.callbacks)
    assert forged.callbacks[0].json["data"]["flags"] & EPHEMERAL


async def test_stats_for_admins_only(fake: FakeDiscord, make_bot: Any) -> None:
    await make_bot(discord={"admins": [BOB]})
    denied = await fake.slash("stats", author=ALICE)
    await fake.until(lambda: denied.callbacks)
    cb = denied.callbacks[0].json
    assert cb["type"] == 4 and cb["data"]["flags"] & EPHEMERAL
    assert cb["data"]["content"] == "Sorry, that command is only for the bot's admins."

    for who, channel in ((ADMIN, WATCHED), (BOB, None)):  # Manage Server; configured admin in DM
        it = await fake.slash("stats", author=who, channel_id=channel)
        msg = await fake.until(lambda it=it: done(it))
        assert it.callbacks[0].json["type"] == 5
        assert it.callbacks[0].json["data"]["flags"] & EPHEMERAL
        assert "Sonify stats" in msg["content"]
        assert fake.file(msg["attachments"][0])[:8] == b"\x89PNG\r\n\x1a\n"


async def test_spanish_interaction_and_guild(fake: FakeDiscord, make_bot: Any) -> None:
    fake.guild_locale = "es-ES"
    await make_bot()
    it = await fake.slash("sonify", upload=Upload("e.png", png_bytes(15)), locale="es-ES")
    answer = await fake.until(lambda: done(it))
    assert any(s.startswith("En cola — #1 en la fila") for s in statuses(fake, it))
    assert set(buttons(answer)) == {"Otra toma", "Usar mis palabras"}

    posted = await fake.send_message(WATCHED, BOB, "", [Upload("f.png", png_bytes(16))])
    await fake.until(lambda: [m for m in fake.replies_to(posted["id"]) if m["attachments"]])
    texts = [c.json.get("content", "") for c in fake.find("POST", rf"/channels/{WATCHED}/messages")]
    assert any(s.startswith("En cola") for s in texts)

    bad = await fake.slash("sonify", upload=Upload("n.txt", b"just words", "text/plain"),
                           locale="es-ES")
    note = await fake.until(lambda: bad.followups)
    assert note[0]["content"].startswith("Eso no es una imagen")
