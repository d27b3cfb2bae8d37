"""Private chats: every way to send a picture ends in a voice note that answers it."""

from __future__ import annotations

import io
import logging

import pytest
import soundfile as sf

from tests.bot.telegram.conftest import (
    ANA,
    ELENA,
    TOKEN,
    Harness,
    StartBot,
    picture,
    voice_info,
)


async def test_photo_round_trip(bot: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # As a host that wants every library's debug lines would: httpx then logs each Bot API
    # URL, and each one carries the token.
    for name in ("httpx", "telegram"):
        caplog.set_level(logging.DEBUG, logger=name)
    fake = bot.fake
    msg = await bot.send_photo(ANA)
    voice = await bot.voice_for(msg)

    # At once: "recording voice…" and a status reply with the queue position.
    action = fake.calls_of("sendChatAction")[0]
    assert action.params["action"] == "record_voice"
    status = fake.calls_of("sendMessage")[0]
    assert status.reply_to == msg["message_id"]
    assert status.text == "Queued — #1 in line"

    # The answer: a real OGG/Opus voice note of the configured length, captioned.
    info = voice_info(voice)
    assert (info.format, info.subtype) == ("OGG", "OPUS")
    assert info.duration == pytest.approx(bot.config.generation.seconds, abs=0.1)
    audio, _ = sf.read(io.BytesIO(voice.files["voice"]))
    assert abs(audio).max() > 0
    assert int(voice.params["duration"]) == 1
    assert int(voice.params["chat_id"]) == ANA["id"]

    # The buttons carry the request id; the logged row holds what the user saw.
    data = [b["callback_data"] for b in voice.buttons]
    request_id = data[0].split(":", 1)[1]
    assert data == [f"again:{request_id}", f"words:{request_id}"]
    assert [b["text"] for b in voice.buttons] == ["Another take", "Use my words"]
    row = await bot.row(request_id)
    assert row.status == "done"
    assert (row.platform, row.user_id, row.source_kind) == ("telegram", str(ANA["id"]), "photo")
    assert voice.params["caption"] == f"🔊 {row.caption or row.prompt}"
    assert row.reply_context["message_id"] == msg["message_id"]
    assert row.reply_context["status_message_id"] == status.result["message_id"]

    # The largest photo size was downloaded (the thumbnail is junk and would have failed).
    assert fake.downloads == [f"documents/{msg['photo'][-1]['file_id']}"]
    # The status message goes away once the answer is there.
    deleted = await fake.wait_for("deleteMessage")
    assert int(deleted.params["message_id"]) == status.result["message_id"]
    assert TOKEN not in caplog.text and TOKEN.split(":")[1] not in caplog.text
    assert "/bot***/sendVoice" in caplog.text  # the URLs were logged, masked


async def test_png_document_with_transparency(bot: Harness) -> None:
    msg = await bot.send_document(picture("PNG", alpha=True), "image/png", "logo.png")
    voice = await bot.voice_for(msg)
    assert voice_info(voice).subtype == "OPUS"
    request_id = voice.buttons[0]["callback_data"].split(":", 1)[1]
    assert (await bot.row(request_id)).source_kind == "document"


async def test_link_in_text(bot: Harness) -> None:
    url = bot.fake.host_image(picture("PNG"))
    msg = await bot.send(ANA, text=f"what does this sound like? {url}")
    voice = await bot.voice_for(msg)
    request_id = voice.buttons[0]["callback_data"].split(":", 1)[1]
    row = await bot.row(request_id)
    assert (row.source_kind, row.status) == ("url", "done")


async def test_sonify_command_with_options_and_link(bot: Harness) -> None:
    url = bot.fake.host_image(picture("JPEG"), "image/jpeg")
    msg = await bot.send(ANA, text=f"/sonify 2s seed=42 {url}")
    voice = await bot.voice_for(msg)
    assert voice_info(voice).duration == pytest.approx(2.0, abs=0.1)
    assert int(voice.params["duration"]) == 2
    row = await bot.row(voice.buttons[0]["callback_data"].split(":", 1)[1])
    assert (row.seed, row.source_kind) == (42, "url")
    assert row.options is not None and row.options["seconds"] == 2.0


async def test_sonify_as_reply_to_a_photo(bot: Harness) -> None:
    photo = {"message_id": bot.fake.new_message_id(), "date": 0, "chat": {"id": ANA["id"],
             "type": "private"}, "from": ANA, "photo": bot.photo_sizes(picture())}
    msg = await bot.send(ANA, text="/sonify", reply_to_message=photo)
    voice = await bot.voice_for(msg)
    assert voice_info(voice).format == "OGG"


async def test_sonify_without_picture_explains(bot: Harness) -> None:
    msg = await bot.send(ANA, text="/sonify")
    assert "Reply to a message with a photo" in await bot.text_for(msg)
    msg = await bot.send(ANA, text="hello there")
    assert await bot.text_for(msg) == "I couldn't find an image in that message."


async def test_spanish_user_gets_spanish(bot: Harness) -> None:
    msg = await bot.send_photo(ELENA)
    voice = await bot.voice_for(msg)
    assert [b["text"] for b in voice.buttons] == ["Otra toma", "Usar mis palabras"]
    assert await bot.text_for(msg, "En cola") == "En cola — #1 en la fila"
    row = await bot.row(voice.buttons[0]["callback_data"].split(":", 1)[1])
    assert row.lang == "es"


async def test_send_as_both_adds_an_mp3(start_bot: StartBot) -> None:
    bot = await start_bot(telegram={"send_as": "both"})
    msg = await bot.send_photo(ANA)
    voice = await bot.voice_for(msg)
    audio = await bot.fake.wait_for("sendAudio", lambda c: c.reply_to == msg["message_id"])
    info = sf.info(io.BytesIO(audio.files["audio"]))
    assert info.format == "MP3"
    assert audio.params["caption"] == voice.params["caption"]
    assert voice.buttons and not audio.buttons


async def test_voice_survives_a_429(bot: Harness) -> None:
    bot.fake.fail_next("sendVoice", status=429, retry_after=1)
    msg = await bot.send_photo(ANA)
    voice = await bot.voice_for(msg)
    attempts = bot.fake.calls_of("sendVoice")
    assert [c.result.get("error_code") if isinstance(c.result, dict) else None
            for c in attempts][:1] == [429]
    assert voice is attempts[1]
    assert voice.at - attempts[0].at >= 0.9  # waited for retry_after
    assert voice_info(voice).subtype == "OPUS"


async def test_link_behind_words(bot: Harness) -> None:
    url = bot.fake.host_image(picture("PNG"))
    msg = await bot.send(ANA, text="listen to this", entities=[
        {"type": "text_link", "offset": 10, "length": 4, "url": url}])
    await bot.voice_for(msg)


async def test_status_becomes_the_final_text_when_it_cannot_be_deleted(bot: Harness) -> None:
    bot.fake.fail_next("deleteMessage", status=400, retry_after=None,
                       description="Bad Request: message can't be deleted for everyone")
    msg = await bot.send_photo(ELENA)
    voice = await bot.voice_for(msg)
    row = await bot.row(voice.buttons[0]["callback_data"].split(":", 1)[1])
    status = bot.fake.calls_of("sendMessage")[0]
    final = await bot.fake.wait_for("editMessageText", lambda c: c.text.startswith("Listo"))
    assert final.text == f"Listo: {row.caption}"
    assert int(final.params["message_id"]) == status.result["message_id"]


@pytest.mark.parametrize("kind", ["link", "document"])
async def test_sonify_as_reply_to_a_link_or_a_file(bot: Harness, kind: str) -> None:
    chat = {"id": ANA["id"], "type": "private"}
    earlier = {"message_id": bot.fake.new_message_id(), "date": 0, "chat": chat, "from": ANA}
    if kind == "link":
        earlier["text"] = f"found this {bot.fake.host_image(picture('PNG'))}"
    else:
        earlier["document"] = {"file_id": bot.fake.add_file(picture("WEBP")),
                               "file_unique_id": "w", "file_name": "p.webp",
                               "mime_type": "image/webp"}
    msg = await bot.send(ANA, text="/sonify 1.5s", reply_to_message=earlier)
    voice = await bot.voice_for(msg)
    assert voice_info(voice).duration == pytest.approx(1.5, abs=0.1)
    row = await bot.row(voice.buttons[0]["callback_data"].split(":", 1)[1])
    assert row.source_kind == {"link": "url", "document": "document"}[kind]
