"""The two buttons under an answer: only for the asker, and still working after a restart."""

from __future__ import annotations

from typing import Any

from tests.bot.telegram.conftest import ANA, BOB, ELENA, Harness, delivered
from tests.bot.telegram.fake_bot_api import Call


def request_id(voice: Call) -> str:
    return voice.buttons[0]["callback_data"].split(":", 1)[1]


async def first_answer(bot: Harness, user: dict[str, Any] = ANA) -> tuple[dict[str, Any], Call]:
    msg = await bot.send_photo(user)
    return msg, await bot.voice_for(msg)


async def answer_of(bot: Harness, query_id: str) -> Call:
    return await bot.fake.wait_for("answerCallbackQuery",
                                   lambda c: c.params["callback_query_id"] == query_id)


async def ask_words(bot: Harness, voice: Call, user: dict[str, Any]) -> Call:
    """Press "Use my words" and return the bot's question (a ForceReply)."""
    after = len(bot.fake.calls)
    await bot.press(f"words:{request_id(voice)}", user, voice.result)
    return await bot.fake.wait_for(
        "sendMessage", lambda c: "force_reply" in (c.params.get("reply_markup") or {}),
        after=after)


async def test_another_take_reuses_the_caption_with_a_new_seed(bot: Harness) -> None:
    msg, voice = await first_answer(bot)
    first = await bot.row(request_id(voice))
    query = await bot.press(f"again:{first.id}", ANA, voice.result)
    assert "text" not in (await answer_of(bot, query)).params  # just stops the spinner
    again = await bot.fake.wait_for(
        "sendVoice", lambda c: delivered(c) and request_id(c) != first.id)
    assert again.reply_to == msg["message_id"]
    second = await bot.row(request_id(again))
    assert (second.source_kind, second.status) == ("retake", "done")
    assert second.caption == first.caption and second.seed != first.seed
    assert second.image_sha256 is None  # no new picture: the stored caption was reused
    assert again.params["caption"] == voice.params["caption"]


async def test_buttons_are_only_for_the_asker(bot: Harness) -> None:
    _, voice = await first_answer(bot)
    for data in (f"again:{request_id(voice)}", f"words:{request_id(voice)}"):
        query = await bot.press(data, BOB, voice.result)
        answer = await answer_of(bot, query)
        assert answer.params["text"] == "Only the person who asked can use these buttons."
        assert answer.params["show_alert"] in (True, "true", "True")
    await bot.settled()
    assert len(bot.fake.calls_of("sendVoice")) == 1
    assert not any("force_reply" in (c.params.get("reply_markup") or {})
                   for c in bot.fake.calls_of("sendMessage"))


async def test_use_my_words(bot: Harness) -> None:
    msg, voice = await first_answer(bot, ELENA)
    ask = await ask_words(bot, voice, ELENA)
    assert ask.text.startswith("Escribe una breve descripción del sonido")
    assert ask.text.endswith(f"🔖 {request_id(voice)}")
    assert ask.params["reply_markup"]["selective"] is True
    assert ask.reply_to == msg["message_id"]

    # Someone else answering the question gets nothing but a polite no.
    intruder = await bot.send(BOB, chat={"id": ELENA["id"], "type": "private"},
                              text="dogs barking", reply_to_message=ask.result)
    assert await bot.text_for(intruder) == "Only the person who asked can use these buttons."

    words = await bot.send(ELENA, text="lluvia sobre un techo de chapa",
                           reply_to_message=ask.result)
    voice2 = await bot.voice_for(words)
    assert voice2.params["caption"] == "🔊 lluvia sobre un techo de chapa"
    row = await bot.row(request_id(voice2))
    assert (row.source_kind, row.prompt, row.lang) == ("text", "lluvia sobre un techo de chapa",
                                                       "es")

    # "Another take" on an answer made from words keeps the words.
    await bot.press(f"again:{row.id}", ELENA, voice2.result)
    again = await bot.fake.wait_for(
        "sendVoice", lambda c: delivered(c) and request_id(c) not in (row.id, request_id(voice)))
    assert again.params["caption"] == "🔊 lluvia sobre un techo de chapa"
    assert (await bot.row(request_id(again))).prompt == row.prompt


async def test_buttons_survive_a_restart(bot: Harness) -> None:
    msg, voice = await first_answer(bot)
    first = await bot.row(request_id(voice))
    await bot.restart()

    await bot.press(f"again:{first.id}", ANA, voice.result)
    again = await bot.fake.wait_for(
        "sendVoice", lambda c: delivered(c) and request_id(c) != first.id)
    assert again.reply_to == msg["message_id"]
    assert (await bot.row(request_id(again))).caption == first.caption

    ask = await ask_words(bot, voice, ANA)
    await bot.restart()  # the question is answered by a bot that never asked it
    words = await bot.send(ANA, text="a cat purring", reply_to_message=ask.result)
    voice2 = await bot.voice_for(words)
    assert voice2.params["caption"] == "🔊 a cat purring"

    # And the non-owner check still holds after the restart.
    query = await bot.press(f"again:{first.id}", BOB, voice.result)
    assert (await answer_of(bot, query)).params["text"].startswith("Only the person")


async def test_unknown_request_is_expired(bot: Harness) -> None:
    fake_message = {"message_id": 5, "date": 0, "chat": {"id": ANA["id"], "type": "private"},
                    "from": {"id": 1, "is_bot": True, "first_name": "x"}, "voice": {
                        "file_id": "v", "file_unique_id": "v", "duration": 1}}
    query = await bot.press("again:doesnotexist", ANA, fake_message)
    assert (await answer_of(bot, query)).params["text"] == (
        "That request is no longer available. Send the picture again.")


async def test_buttons_respect_a_narrowed_allow_list(start_bot: Any) -> None:
    """Buttons on an answer given before the chat left `allowed_chats` do nothing."""
    first = await start_bot()
    _, voice = await first_answer(first)
    await first.stop()
    narrowed = await start_bot(telegram={"allowed_chats": [-1]})  # same database and fake
    query = await narrowed.press(f"again:{request_id(voice)}", ANA, voice.result)
    assert "text" not in (await answer_of(narrowed, query)).params
    await narrowed.settled()
    assert [c for c in narrowed.fake.calls_of("sendVoice") if delivered(c)] == [voice]


async def test_words_that_are_not_text_get_the_catalogue_text(bot: Harness) -> None:
    """Words no database can store (a lone surrogate, a NUL): the plain refusal in the
    user's language and a `words_invalid` row, never a failure."""
    _, voice = await first_answer(bot, ELENA)
    for words in ("\ud800 x", "x\u0000y"):
        ask = await ask_words(bot, voice, ELENA)
        sent = await bot.send(ELENA, text=words, reply_to_message=ask.result)
        assert (await bot.text_for(sent)).startswith(
            "Tu descripción contiene caracteres que no son texto")
    assert bot.services is not None
    rows = [r for r in await bot.services.request_log.rows_since(0) if r.status == "rejected"]
    assert [(r.reason, r.times, r.prompt) for r in rows] == [("words_invalid", 2, "\ufffd x")]
    assert len(bot.fake.calls_of("sendVoice")) == 1  # nothing rendered
