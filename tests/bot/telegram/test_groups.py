"""Groups: the bot answers only when addressed (privacy mode), unless group_photos is on."""

from __future__ import annotations

import pytest

from tests.bot.telegram.conftest import (
    ANA,
    BOB,
    GROUP,
    Harness,
    StartBot,
    picture,
    voice_info,
)
from tests.bot.telegram.fake_bot_api import BOT_USERNAME


def replied_to(bot: Harness, msg: dict) -> list[str]:
    """Every method the bot used to answer `msg`."""
    return [c.method for c in bot.fake.calls if c.reply_to == msg["message_id"]]


async def test_group_ignores_unaddressed_photos_but_answers_commands(bot: Harness) -> None:
    chatter = await bot.send_photo(BOB, GROUP)
    link = await bot.send(BOB, GROUP, text=f"look {bot.fake.host_image(picture('PNG'))}")
    other_bot = await bot.send(BOB, GROUP, text="/sonify@some_other_bot",
                               reply_to_message=chatter)
    asked = await bot.send(ANA, GROUP, text=f"/sonify@{BOT_USERNAME}", reply_to_message=chatter)
    voice = await bot.voice_for(asked)
    assert int(voice.params["chat_id"]) == GROUP["id"]
    await bot.settled()
    assert len(bot.fake.calls_of("sendVoice")) == 1
    for quiet in (chatter, link, other_bot):
        assert replied_to(bot, quiet) == []
    # Only the picture /sonify pointed at was downloaded, once.
    assert bot.fake.downloads == [f"documents/{chatter['photo'][-1]['file_id']}"]


async def test_group_mention_in_caption_with_options(bot: Harness) -> None:
    msg = await bot.send(ANA, GROUP, photo=bot.photo_sizes(picture()),
                         caption=f"@{BOT_USERNAME} 2s")
    voice = await bot.voice_for(msg)
    assert voice_info(voice).duration == pytest.approx(2.0, abs=0.1)


async def test_group_mention_replying_to_a_picture(bot: Harness) -> None:
    picture_msg = await bot.send(BOB, GROUP, document={
        "file_id": bot.fake.add_file(picture("PNG")), "file_unique_id": "u",
        "file_name": "a.png", "mime_type": "image/png"})
    msg = await bot.send(ANA, GROUP, text=f"@{BOT_USERNAME} what is this?",
                         reply_to_message=picture_msg)
    await bot.voice_for(msg)


async def test_group_reply_to_the_bot_with_a_photo(bot: Harness) -> None:
    first = await bot.send(ANA, GROUP, text=f"/sonify {bot.fake.host_image(picture('PNG'))}")
    voice = await bot.voice_for(first)
    msg = await bot.send(BOB, GROUP, photo=bot.photo_sizes(picture()),
                         reply_to_message=voice.result)
    await bot.voice_for(msg)


async def test_group_without_a_picture_explains(bot: Harness) -> None:
    msg = await bot.send(ANA, GROUP, text=f"/sonify@{BOT_USERNAME}")
    assert (await bot.text_for(msg)).startswith("Reply to a message with a photo")


async def test_group_photos_setting(start_bot: StartBot) -> None:
    bot = await start_bot(telegram={"group_photos": True})
    msg = await bot.send_photo(BOB, GROUP)
    await bot.voice_for(msg)


async def test_allowed_chats(start_bot: StartBot) -> None:
    bot = await start_bot(telegram={"allowed_chats": [GROUP["id"]]})
    outsider = await bot.send_photo(BOB)
    inside = await bot.send(ANA, GROUP, photo=bot.photo_sizes(picture()),
                            caption=f"/sonify@{BOT_USERNAME}")
    await bot.voice_for(inside)
    await bot.settled()
    assert replied_to(bot, outsider) == []


async def test_group_chat_replies_to_the_bot_are_not_nagged(bot: Harness) -> None:
    first = await bot.send(ANA, GROUP, text=f"/sonify {bot.fake.host_image(picture('PNG'))}")
    voice = await bot.voice_for(first)
    thanks = await bot.send(BOB, GROUP, text="ha, love it", reply_to_message=voice.result)
    asked = await bot.send(BOB, GROUP, text=f"@{BOT_USERNAME} and this?",
                           reply_to_message=voice.result)
    assert (await bot.text_for(asked)).startswith("Reply to a message with a photo")
    await bot.settled()
    assert replied_to(bot, thanks) == []
