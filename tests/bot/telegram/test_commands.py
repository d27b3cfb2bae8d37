"""/start, /help, /stats and the command menu."""

from __future__ import annotations

from tests.bot.telegram.conftest import ANA, BOB, ELENA, Harness


async def test_command_menu_in_both_languages(bot: Harness) -> None:
    menus = {(c.params.get("language_code"), (c.params.get("scope") or {}).get("type")):
             {cmd["command"]: cmd["description"] for cmd in c.params["commands"]}
             for c in bot.fake.calls_of("setMyCommands")}
    assert set(menus[(None, None)]) == {"sonify", "help", "settings"}
    assert menus[("es", None)]["help"] == "Qué hace este bot y cómo usarlo"
    assert menus[(None, None)]["help"] == "What this bot does and how to use it"
    # /stats is only in the admins' own menu.
    assert set(menus[(None, "chat")]) == {"sonify", "help", "settings", "stats"}
    assert set(menus[("es", "chat")]) == {"sonify", "help", "settings", "stats"}


async def test_start_and_help(bot: Harness) -> None:
    msg = await bot.send(BOB, text="/start")
    text = await bot.text_for(msg)
    assert text.startswith("Send me a picture and I will tell you what it sounds like.")
    assert "up to 10 s" in text and "up to 20 MB" in text and "Up to 30 requests" in text
    msg = await bot.send(ELENA, text="/help")
    assert (await bot.text_for(msg)).startswith("Envíame una imagen y te diré cómo suena.")
    msg = await bot.send(BOB, text="/whatever")
    assert (await bot.text_for(msg)).startswith("Send me a picture")


async def test_stats_for_admins_only(bot: Harness) -> None:
    await bot.voice_for(await bot.send_photo(BOB))
    refused = await bot.send(BOB, text="/stats")
    assert await bot.text_for(refused) == "Sorry, that command is only for the bot's admins."
    refused_es = await bot.send(ELENA, text="/stats")
    assert await bot.text_for(refused_es) == ("Lo siento, ese comando es solo para los "
                                              "administradores del bot.")
    assert bot.fake.calls_of("sendPhoto") == []

    asked = await bot.send(ANA, text="/stats")
    chart = await bot.fake.wait_for("sendPhoto", lambda c: c.reply_to == asked["message_id"])
    assert chart.files["photo"].startswith(b"\x89PNG\r\n\x1a\n")
    assert bot.services is not None
    expected, _ = await bot.services.stats_report()
    text = await bot.text_for(asked, "Sonify stats")
    # The first line holds the time of day: compare the figures below it.
    assert text.splitlines()[1:] == expected.splitlines()[1:]
    assert f"telegram:{BOB['id']} (1)" in text
