"""/settings on Telegram: a group's admins switch photo answering on; others are refused."""

from __future__ import annotations

from typing import Any

from tests.bot.telegram.conftest import (
    ANA,
    BOB,
    ELENA,
    GROUP,
    Harness,
    StartBot,
    picture,
    private,
)
from tests.bot.telegram.fake_bot_api import Call

CARLA = {"id": 1004, "is_bot": False, "first_name": "Carla", "language_code": "en"}


async def panel_of(bot: Harness, asked: dict[str, Any]) -> Call:
    """The panel the bot sent in answer to `/settings`."""
    return await bot.fake.wait_for("sendMessage", lambda c: c.reply_to == asked["message_id"]
                                   and bool(c.buttons))


def button(panel: Call, field: str) -> str:
    (data,) = [b["callback_data"] for b in panel.buttons
               if b["callback_data"].split(":")[1] == field][:1]
    return str(data)


def as_message(panel: Call, chat: dict[str, Any]) -> dict[str, Any]:
    return {**panel.result, "chat": chat}


async def alert(bot: Harness, query_id: str) -> str:
    call = await bot.fake.wait_for("answerCallbackQuery",
                                   lambda c: c.params["callback_query_id"] == query_id)
    return str(call.params.get("text", ""))


async def audit(bot: Harness, chat_id: int) -> list[tuple[str, Any, Any, str]]:
    assert bot.services is not None
    rows = await bot.services.chat_settings.audit("telegram", chat_id)
    return [(a.key, a.old_value, a.new_value, a.changed_by) for a in rows]


async def test_a_group_admin_switches_photo_answering_on_and_the_next_photo_is_answered(
        bot: Harness) -> None:
    bot.fake.chat_admins[GROUP["id"]] = {BOB["id"]}  # Telegram says so (getChatMember)
    refused = await bot.send(CARLA, GROUP, text="/settings")
    assert "Only this group's admins" in await bot.text_for(refused)

    asked = await bot.send(BOB, GROUP, text="/settings")
    panel = await panel_of(bot, asked)
    assert "Every photo in the group answered: off" in panel.text
    assert "privacy mode" in panel.text
    # A member who is not an admin presses the admin's panel: refused, nothing changes.
    query = await bot.press(button(panel, "photos-on"), CARLA, as_message(panel, GROUP))
    assert "Only this group's admins" in await alert(bot, query)
    ignored = await bot.send_photo(CARLA, GROUP)
    await bot.settled()
    assert [c for c in bot.fake.calls if c.reply_to == ignored["message_id"]] == []
    assert await audit(bot, GROUP["id"]) == []

    query = await bot.press(button(panel, "photos-on"), BOB, as_message(panel, GROUP))
    redrawn = await bot.fake.wait_for("editMessageText", lambda c: int(
        c.params["message_id"]) == panel.result["message_id"])
    assert "Every photo in the group answered: on" in redrawn.text
    answered = await bot.send_photo(CARLA, GROUP)
    voice = await bot.voice_for(answered)
    assert int(voice.params["chat_id"]) == GROUP["id"]
    assert await audit(bot, GROUP["id"]) == [("group_photos", None, True, f"telegram:{BOB['id']}")]

    # The same (now stale) panel pressed again changes nothing.
    query = await bot.press(button(panel, "enabled-off"), BOB, as_message(panel, GROUP))
    assert "changed meanwhile" in await alert(bot, query)
    assert len(await audit(bot, GROUP["id"])) == 1


async def test_a_user_sets_their_own_reply_style_in_a_private_chat(bot: Harness) -> None:
    asked = await bot.send(ELENA, text="/settings")
    panel = await panel_of(bot, asked)
    assert "Tus valores predeterminados" in panel.text and "photos" not in panel.text
    assert not [b for b in panel.buttons if "photos" in b["callback_data"]]
    query = await bot.press(button(panel, "style-audio"), ELENA,
                            as_message(panel, private(ELENA)))
    await bot.fake.wait_for("editMessageText",
                            lambda c: int(c.params["message_id"]) == panel.result["message_id"])
    assert await alert(bot, query) == ""
    photo = await bot.send_photo(ELENA)
    audio = await bot.fake.wait_for("sendAudio", lambda c: c.reply_to == photo["message_id"])
    assert audio.files["audio"]
    assert bot.fake.calls_of("sendVoice") == []


async def test_the_operator_can_forbid_chat_settings(start_bot: StartBot) -> None:
    bot = await start_bot(telegram={"chat_settings": False})
    asked = await bot.send(ANA, GROUP, text="/settings")
    assert "doesn't allow changing its settings" in await bot.text_for(asked)


async def test_stats_show_a_group_admin_their_group_and_the_config_admins_everything(
        bot: Harness) -> None:
    bot.fake.chat_admins[GROUP["id"]] = {BOB["id"]}
    await bot.voice_for(await bot.send(CARLA, GROUP, photo=bot.photo_sizes(picture()),
                                       caption="/sonify"))
    await bot.voice_for(await bot.send_photo(CARLA))  # a private chat: not the group's
    refused = await bot.send(CARLA, GROUP, text="/stats")
    assert await bot.text_for(refused) == "Sorry, that command is only for the bot's admins."

    group = await bot.send(BOB, GROUP, text="/stats")
    text = await bot.text_for(group, "Sonify stats")
    assert "— Friends" in text and "Today: 1 requests — telegram 1" in text
    everything = await bot.send(ANA, text="/stats")
    text = await bot.text_for(everything, "Sonify stats")
    assert "Today: 2 requests — telegram 2" in text
