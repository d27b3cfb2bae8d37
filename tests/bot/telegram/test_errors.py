"""Every refusal and failure reaches the user in plain words, and is logged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.bot.telegram.conftest import (
    ANA,
    BOB,
    ELENA,
    GatedPipeline,
    Harness,
    StartBot,
    picture,
)

CARLOS = {"id": 1004, "is_bot": False, "first_name": "Carlos", "language_code": "en"}


async def rows(bot: Harness) -> list[dict[str, Any]]:
    assert bot.services is not None
    found = await bot.services.request_log.rows_since(
        0, ["status", "reason", "source_kind", "user_id"])
    return [dict(r._mapping) for r in found]


async def test_not_an_image(bot: Harness) -> None:
    msg = await bot.send_document(b"\x00\x01 certainly not a picture " * 20,
                                  "application/octet-stream", "data.bin")
    assert await bot.text_for(msg) == ("That isn't an image. Send a JPEG, PNG, WebP, GIF, BMP "
                                       "or TIFF picture.")
    assert await rows(bot) == [{"status": "rejected", "reason": "not_image",
                                "source_kind": "document", "user_id": str(ANA["id"])}]


@pytest.mark.parametrize("kind", ["photo", "document"])
async def test_too_large_is_refused_before_download(bot: Harness, kind: str) -> None:
    size = 25_000_000
    if kind == "photo":
        msg = await bot.send(ANA, photo=bot.photo_sizes(picture(), size=size))
    else:
        msg = await bot.send_document(picture("PNG"), "image/png", "huge.png", size=size)
    assert await bot.text_for(msg) == "That file is too large — the limit is 20 MB."
    assert bot.fake.calls_of("getFile") == [] and bot.fake.downloads == []
    assert (await rows(bot))[0]["reason"] == "too_large"


async def test_pdf_is_an_unsupported_format(bot: Harness) -> None:
    msg = await bot.send_document(b"%PDF-1.7\n...", "application/pdf", "paper.pdf")
    assert (await bot.text_for(msg)).startswith("PDF files aren't supported.")
    assert bot.fake.downloads == []
    msg = await bot.send_document(b"%PDF-1.7\n...", "application/pdf", "papel.pdf", user=ELENA)
    assert (await bot.text_for(msg)).startswith("Los archivos PDF no son compatibles.")
    assert [r["reason"] for r in await rows(bot)] == ["unsupported_format"] * 2


async def test_private_link_is_blocked(start_bot: StartBot) -> None:
    bot = await start_bot(images={"allow_private_networks": False})
    url = bot.fake.host_image(picture("PNG"))
    msg = await bot.send(ANA, text=url)
    assert await bot.text_for(msg) == (
        "I can't fetch that link: it points to a private or local network. (Running Sonify on "
        "your own network? Its operator can allow such links with [images] "
        "allow_private_networks = true.)")
    assert (await rows(bot))[0] == {"status": "rejected", "reason": "blocked_address",
                                    "source_kind": "url", "user_id": str(ANA["id"])}


@pytest.mark.parametrize(("args", "expected", "reason"), [
    ("99s", "The length must be between 0.5 and 10 seconds.", "bad_seconds"),
    ("seed=abc", "The seed must be a whole number between 0 and 2147483647.", "bad_seed"),
    ("volume=11", "One of the options is not valid.", "bad_option"),
])
async def test_bad_options(bot: Harness, args: str, expected: str, reason: str) -> None:
    url = bot.fake.host_image(picture("PNG"))
    msg = await bot.send(ANA, text=f"/sonify {args} {url}")
    assert await bot.text_for(msg) == expected
    assert (await rows(bot))[0]["reason"] == reason


async def test_busy(start_bot: StartBot, tiny_pipeline: Any) -> None:
    gated = GatedPipeline(tiny_pipeline)
    bot = await start_bot(pipeline=gated, jobs={"max_queue": 1, "max_batch": 1})
    first = await bot.send_photo(BOB)
    assert await asyncio.to_thread(gated.entered.wait, 20)
    second = await bot.send_photo(CARLOS)
    assert await bot.text_for(second, "Queued") == "Queued — #1 in line"
    third = await bot.send_photo(ELENA)
    assert (await bot.text_for(third, "ocupado")).startswith(
        "Estoy muy ocupado ahora mismo. Inténtalo de nuevo en unos ")
    gated.gate.set()
    await bot.voice_for(first)
    await bot.voice_for(second)
    assert sorted((r["status"], r["reason"]) for r in await rows(bot)) == [
        ("done", None), ("done", None), ("rejected", "busy")]


async def test_per_user_limits(start_bot: StartBot, tiny_pipeline: Any) -> None:
    gated = GatedPipeline(tiny_pipeline)
    bot = await start_bot(pipeline=gated, jobs={"per_user_concurrent": 1,
                                                "per_user_per_hour": 2})
    first = await bot.send_photo(BOB)
    assert await asyncio.to_thread(gated.entered.wait, 20)
    second = await bot.send_photo(BOB)
    assert (await bot.text_for(second, "in progress")).startswith(
        "You already have requests in progress. Try again in about ")
    gated.gate.set()
    await bot.voice_for(first)
    third = await bot.send_photo(BOB)
    await bot.voice_for(third)
    fourth = await bot.send_photo(BOB)
    assert await bot.text_for(fourth, "limit") == ("You've reached the limit of requests per "
                                                   "hour. Try again in 60 min.")
    # Admins are not limited.
    await bot.voice_for(await bot.send_photo(ANA))
    reasons = sorted(str(r["reason"]) for r in await rows(bot) if r["status"] == "rejected")
    assert reasons == ["hourly_limit", "too_many_running"]


async def test_generation_failed(start_bot: StartBot, tiny_pipeline: Any) -> None:
    bot = await start_bot(pipeline=GatedPipeline(tiny_pipeline, fail=True, open_gate=True))
    msg = await bot.send_photo(ANA)
    text = await bot.text_for(msg, "Sorry")
    assert text == "Sorry, generating the sound failed. Please try again."
    # The status message itself became the error (no dangling "Queued").
    status = bot.fake.calls_of("sendMessage")[0]
    edit = await bot.fake.wait_for("editMessageText", lambda c: c.text == text)
    assert int(edit.params["message_id"]) == status.result["message_id"]
    assert not any("secret" in c.text or "Traceback" in c.text for c in bot.fake.calls)
    assert bot.fake.calls_of("sendVoice") == []
    assert (await rows(bot))[0]["status"] == "failed"


@pytest.mark.parametrize("how", ["getFile reports the size", "getFile refuses"])
async def test_too_large_when_only_telegram_knows_the_size(bot: Harness, how: str) -> None:
    # A forwarded file may come without file_size: the limit is checked again at getFile.
    file_id = bot.fake.add_file(picture("PNG"), size=25_000_000)
    if how == "getFile refuses":
        bot.fake.fail_next("getFile", status=400, retry_after=None,
                           description="Bad Request: file is too big")
    msg = await bot.send(ELENA, document={"file_id": file_id, "file_unique_id": "big",
                                          "file_name": "big.png", "mime_type": "image/png"})
    assert await bot.text_for(msg) == "Ese archivo es demasiado grande: el límite es 20 MB."
    assert bot.fake.downloads == []
    assert (await rows(bot))[0]["reason"] == "too_large"


async def test_a_photo_refused_during_shutdown_is_a_rejected_row(bot: Harness) -> None:
    """The engine stops first on shutdown; a photo arriving then is refused, told and logged."""
    assert bot.services is not None
    await bot.services.engine.stop(1.0)
    msg = await bot.send_photo(ELENA)
    text = await bot.text_for(msg, contains="reiniciando")
    assert text == "El bot se está reiniciando. Inténtalo de nuevo en un minuto."
    assert await rows(bot) == [{"status": "rejected", "reason": "shutting_down",
                                "source_kind": "photo", "user_id": str(ELENA["id"])}]
