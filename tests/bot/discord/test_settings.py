"""/settings on Discord: server admins change the bot's settings in chat, effective at once."""

from __future__ import annotations

from typing import Any

from tests.bot.discord.conftest import Bot, png_bytes
from tests.bot.discord.fake_discord import (
    ADMIN,
    ALICE,
    BOB,
    EPHEMERAL,
    GUILD_ID,
    OTHER,
    STAFF,
    WATCHED,
    FakeDiscord,
    Interaction,
    Upload,
)


def panel_ids(message: dict[str, Any]) -> dict[str, str]:
    """field -> custom id of the panel's menus and buttons."""
    found = {}
    for row in message["components"]:
        for comp in row["components"]:
            found[comp["custom_id"].split(":")[2]] = comp["custom_id"]
    return found


async def open_panel(fake: FakeDiscord, author: int = ADMIN) -> dict[str, Any]:
    it = await fake.slash("settings", author=author)
    await fake.until(lambda: it.original)
    assert it.original is not None and it.original["flags"] & EPHEMERAL
    return it.original


def answered(it: Interaction) -> dict[str, Any] | None:
    """What the bot answered a click: (callback type, its data)."""
    return it.callbacks[0].json if it.callbacks else None


def ephemeral_text(it: Interaction) -> str:
    reply = answered(it)
    assert reply is not None and reply["type"] == 4, reply
    assert reply["data"]["flags"] & EPHEMERAL
    return str(reply["data"]["content"])


def file_answers(fake: FakeDiscord, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in fake.replies_to(message["id"]) if m["attachments"]]


async def audit(bot: Bot) -> list[tuple[str, str, Any, Any, str]]:
    assert bot.services is not None
    rows = await bot.services.chat_settings.audit("discord", GUILD_ID)
    return [(a.key, a.channel_id, a.old_value, a.new_value, a.changed_by) for a in rows]


async def test_an_admin_adds_a_channel_and_the_next_picture_there_is_answered(
        fake: FakeDiscord, make_bot: Any) -> None:
    bot = await make_bot()
    panel = await open_panel(fake)
    assert f"<#{WATCHED}>" in panel["content"] and f"<#{OTHER}>" not in panel["content"]
    pick = await fake.choose(panel, panel_ids(panel)["channels"], [str(WATCHED), str(OTHER)],
                             author=ADMIN, component_type=8)
    reply = await fake.until(lambda: answered(pick))
    assert reply["type"] == 7  # the panel redrawn with the change
    assert f"<#{OTHER}>" in reply["data"]["content"] and "Saved" in reply["data"]["content"]

    posted = await fake.send_message(OTHER, ALICE, "", [Upload("o.png", png_bytes(71))])
    (answer,) = await fake.until(lambda: file_answers(fake, posted))
    assert answer["channel_id"] == str(OTHER)
    assert await audit(bot) == [("watched", str(OTHER), None, True, f"discord:{ADMIN}")]

    # Removing a channel the config watches is stored as "not watched" there.
    panel = await open_panel(fake)
    drop = await fake.choose(panel, panel_ids(panel)["channels"], [str(OTHER)], author=ADMIN,
                             component_type=8)
    assert (await fake.until(lambda: answered(drop)))["type"] == 7
    quiet = await fake.send_message(WATCHED, ALICE, "", [Upload("w.png", png_bytes(72))])
    loud = await fake.send_message(OTHER, ALICE, "", [Upload("x.png", png_bytes(73))])
    await fake.until(lambda: file_answers(fake, loud))
    assert fake.replies_to(quiet["id"]) == []
    assert (await audit(bot))[0] == ("watched", str(WATCHED), None, False, f"discord:{ADMIN}")


async def test_a_member_without_manage_server_is_refused_and_nothing_changes(
        fake: FakeDiscord, make_bot: Any) -> None:
    bot = await make_bot()
    it = await fake.slash("settings", author=ALICE)
    await fake.until(lambda: answered(it))
    assert "Manage Server" in ephemeral_text(it)
    panel = await open_panel(fake)  # an admin's panel, clicked by someone who is not one
    pick = await fake.choose(panel, panel_ids(panel)["channels"], [str(OTHER)], author=ALICE,
                             component_type=8)
    await fake.until(lambda: answered(pick))
    assert "Nothing was changed" in ephemeral_text(pick)
    assert await audit(bot) == []
    posted = await fake.send_message(OTHER, ALICE, "", [Upload("n.png", png_bytes(74))])
    watched = await fake.send_message(WATCHED, ALICE, "", [Upload("m.png", png_bytes(75))])
    await fake.until(lambda: file_answers(fake, watched))
    assert fake.replies_to(posted["id"]) == []


async def test_a_limit_above_the_config_a_hidden_channel_and_a_stale_panel_are_refused(
        fake: FakeDiscord, make_bot: Any) -> None:
    bot = await make_bot(jobs={"per_user_per_hour": 30})
    panel = await open_panel(fake)
    ids = panel_ids(panel)
    too_many = await fake.choose(panel, ids["per_hour"], ["31"], author=ADMIN)
    await fake.until(lambda: answered(too_many))
    assert "outside what this bot allows (1 to 30)" in ephemeral_text(too_many)
    hidden = await fake.choose(panel, ids["channels"], [str(WATCHED), str(STAFF)],
                               author=ADMIN, component_type=8)
    await fake.until(lambda: answered(hidden))
    assert f"<#{STAFF}>" in ephemeral_text(hidden)
    assert await audit(bot) == []

    fewer = await fake.choose(panel, ids["per_hour"], ["5"], author=ADMIN)
    assert (await fake.until(lambda: answered(fewer)))["type"] == 7
    stale = await fake.choose(panel, ids["seconds"], ["3"], author=ADMIN)  # drawn before
    await fake.until(lambda: answered(stale))
    assert "changed meanwhile" in ephemeral_text(stale)
    assert await audit(bot) == [("per_hour", "", None, 5, f"discord:{ADMIN}")]


async def test_length_style_language_and_switching_off_apply_to_the_next_picture(
        fake: FakeDiscord, make_bot: Any) -> None:
    bot = await make_bot()
    for field, values in (("seconds", ["2"]), ("language", ["es"]), ("style-voice", None),
                          ("enabled-off", None)):
        panel = await open_panel(fake)
        custom_id = panel_ids(panel)[field]
        if values is None:
            it = await fake.click(panel, custom_id, author=ADMIN)
        else:
            it = await fake.choose(panel, custom_id, values, author=ADMIN)
        assert (await fake.until(lambda it=it: answered(it)))["type"] == 7
    ignored = await fake.send_message(WATCHED, ALICE, "", [Upload("a.png", png_bytes(76))])
    by_admin = await fake.send_message(WATCHED, ADMIN, "", [Upload("b.png", png_bytes(77))])
    (answer,) = await fake.until(lambda: file_answers(fake, by_admin))
    assert fake.replies_to(ignored["id"]) == []
    assert answer["flags"] & (1 << 13)  # a voice message
    assert abs(answer["attachments"][0]["duration_secs"] - 2.0) < 0.1
    off = await fake.slash("sonify", upload=Upload("c.png", png_bytes(78)), author=ALICE)
    await fake.until(lambda: off.callbacks)
    assert "switched off here" in ephemeral_text(off)
    assert [k for k, *_ in await audit(bot)] == ["enabled", "reply_style", "language",
                                                 "seconds"]


async def test_stats_show_a_server_admin_their_own_server_and_the_config_admins_everything(
        fake: FakeDiscord, make_bot: Any) -> None:
    bot = await make_bot(discord={"admins": [BOB]})
    here = await fake.send_message(WATCHED, ALICE, "", [Upload("s.png", png_bytes(79))])
    away = await fake.send_message(None, ALICE, "", [Upload("d.png", png_bytes(80))])  # a DM
    await fake.until(lambda: file_answers(fake, here) and file_answers(fake, away))

    def stats_text(it: Interaction) -> str | None:
        msg = it.original
        return msg["content"] if msg and msg["attachments"] else None

    server = await fake.slash("stats", author=ADMIN)
    text = await fake.until(lambda: stats_text(server))
    assert "— Test server" in text and "Today: 1 requests — discord 1" in text
    assert "All kept: 1 requests" in text
    everything = await fake.slash("stats", author=BOB, channel_id=None)
    text = await fake.until(lambda: stats_text(everything))
    assert "Today: 2 requests — discord 2" in text and "All time: 2 requests" in text
    assert bot.services is not None
