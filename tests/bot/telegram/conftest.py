"""Fixtures: the fake Bot API, and a harness that runs the real adapter on tiny models."""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from bot.telegram.adapter import TelegramAdapter
from core.config import Config
from core.i18n import CATALOGUE
from core.records import RequestRecord
from core.services import Services
from tests.bot.telegram.fake_bot_api import BOT_USERNAME, Call, FakeBotAPI
from tests.conftest import make_config

TOKEN = "123456789:AAFake-Token_for-tests-only-xyz"
ANA = {"id": 1001, "is_bot": False, "first_name": "Ana", "language_code": "en-GB"}
ELENA = {"id": 1002, "is_bot": False, "first_name": "Elena", "language_code": "es"}
BOB = {"id": 1003, "is_bot": False, "first_name": "Bob", "language_code": "en"}
GROUP = {"id": -1001234, "type": "supergroup", "title": "Friends"}

_pictures = itertools.count(1)


def picture(fmt: str = "JPEG", *, alpha: bool = False, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small picture whose pixels differ every call (so no two requests share a cache entry)."""
    rng = np.random.default_rng(next(_pictures))
    channels = 4 if alpha else 3
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    if alpha:
        pixels[: size[1] // 2, :, 3] = 0  # half transparent
    out = io.BytesIO()
    Image.fromarray(pixels, "RGBA" if alpha else "RGB").save(out, fmt)
    return out.getvalue()


def private(user: dict[str, Any]) -> dict[str, Any]:
    return {"id": user["id"], "type": "private", "first_name": user["first_name"]}


def entities_for(text: str) -> list[dict[str, Any]]:
    """Command and @mention entities, as Telegram attaches them."""
    found = []
    if text.startswith("/"):
        found.append({"type": "bot_command", "offset": 0, "length": len(text.split()[0])})
    mention = f"@{BOT_USERNAME}"
    if mention in text and not text.startswith("/"):
        found.append({"type": "mention", "offset": text.index(mention), "length": len(mention)})
    return found


def is_status(text: str) -> bool:
    """A status line ("Queued — #1 in line", "Rendering sound… 40%"), not a final answer."""
    patterns = (re.sub(r"\\\{\w+\\\}", r"\\d+", re.escape(CATALOGUE[lang][key]))
                for key in ("queued", "started", "progress") for lang in CATALOGUE)
    return any(re.fullmatch(pattern, text) for pattern in patterns)


def voice_info(call: Call) -> sf._SoundFileInfo:
    """soundfile's view of the voice note the bot uploaded."""
    return sf.info(io.BytesIO(call.files["voice"]))


def delivered(call: Call) -> bool:
    """The fake accepted the call (it was not answered with an injected error)."""
    return isinstance(call.result, dict) and "message_id" in call.result


class Harness:
    """One bot (Services + TelegramAdapter) against the fake server, plus update builders."""

    def __init__(self, fake: FakeBotAPI, config: Config, pipeline: Any) -> None:
        self.fake, self.config, self.pipeline = fake, config, pipeline
        self.services: Services | None = None
        self.adapter: TelegramAdapter | None = None

    async def start(self) -> Harness:
        pipeline = self.pipeline
        self.services = await Services.create(self.config, pipeline_factory=lambda: pipeline)
        self.adapter = TelegramAdapter(self.services)
        await self.adapter.start()
        await self.services.engine.resume_recovered()
        return self

    async def stop(self, engine_timeout: float = 10.0) -> None:
        if self.services is not None:
            await self.services.engine.stop(engine_timeout)
        if self.adapter is not None:
            await self.adapter.stop()
            self.adapter = None
        if self.services is not None:
            await self.services.close()
            self.services = None

    async def restart(self, pipeline: Any = None) -> None:
        """Stop everything and start afresh on the same database (a bot restart)."""
        await self.stop()
        if pipeline is not None:
            self.pipeline = pipeline
        await self.start()

    # -- updates -----------------------------------------------------------------------
    async def send(self, user: dict[str, Any], chat: dict[str, Any] | None = None,
                   **content: Any) -> dict[str, Any]:
        """Push a message from `user` (in their private chat unless `chat` is given)."""
        msg = {"message_id": self.fake.new_message_id(), "date": int(time.time()),
               "chat": chat or private(user), "from": user, **content}
        for field, key in (("text", "entities"), ("caption", "caption_entities")):
            if field in msg and key not in msg and entities_for(msg[field]):
                msg[key] = entities_for(msg[field])
        await self.fake.push({"message": msg})
        return msg

    def photo_sizes(self, data: bytes, *, size: int | None = None) -> list[dict[str, Any]]:
        """A thumbnail (junk bytes: picking it would fail) and the full picture."""
        thumb = self.fake.add_file(b"not the picture you want")
        full = self.fake.add_file(data, size=size)
        return [{"file_id": thumb, "file_unique_id": f"t{thumb}", "width": 90, "height": 60,
                 "file_size": 24},
                {"file_id": full, "file_unique_id": f"f{full}", "width": 960, "height": 640,
                 "file_size": size or len(data)}]

    async def send_photo(self, user: dict[str, Any] = ANA, chat: dict[str, Any] | None = None,
                         **extra: Any) -> dict[str, Any]:
        return await self.send(user, chat, photo=self.photo_sizes(picture()), **extra)

    async def send_document(self, data: bytes, mime: str, name: str, *,
                            user: dict[str, Any] = ANA, size: int | None = None,
                            **extra: Any) -> dict[str, Any]:
        file_id = self.fake.add_file(data, size=size)
        doc = {"file_id": file_id, "file_unique_id": f"d{file_id}", "file_name": name,
               "mime_type": mime, "file_size": size or len(data)}
        return await self.send(user, document=doc, **extra)

    async def press(self, data: str, user: dict[str, Any], message: dict[str, Any]) -> str:
        """Press an inline button on `message` (a message the bot sent); returns the query id."""
        query_id = f"q{self.fake.new_message_id()}"
        await self.fake.push({"callback_query": {
            "id": query_id, "from": user, "chat_instance": "ci", "data": data,
            "message": message}})
        return query_id

    async def settled(self, within: float = 20.0) -> None:
        """Everything pushed so far has been handled and every answer it started has ended:
        after this, "nothing else was sent" is a fact, not a guess from a quiet moment."""
        assert self.adapter is not None
        await self.fake.wait_confirmed(self.fake.last_update_id, within=within)
        try:
            await asyncio.wait_for(self.adapter.requests.tasks.idle(), within)
        except TimeoutError:
            raise AssertionError(f"answers still running after {within} s") from None

    # -- answers -----------------------------------------------------------------------
    async def voice_for(self, msg: dict[str, Any], within: float = 30.0) -> Call:
        """The voice note answering `msg`."""
        return await self.fake.wait_for(
            "sendVoice", lambda c: c.reply_to == msg["message_id"] and delivered(c),
            within=within)

    async def text_for(self, msg: dict[str, Any], contains: str = "",
                       within: float = 20.0) -> str:
        """A text reply to `msg`, or its status message edited into a final text."""
        mid = msg["message_id"]

        def find() -> Call | None:
            status = {c.result["message_id"] for c in self.fake.calls_of("sendMessage")
                      if c.reply_to == mid and isinstance(c.result, dict)
                      and "message_id" in c.result}
            for c in self.fake.calls:
                if contains not in c.text or (not contains and is_status(c.text)):
                    continue
                if c.method == "sendMessage" and c.reply_to == mid:
                    return c
                if c.method == "editMessageText" and int(c.params["message_id"]) in status:
                    return c
            return None

        deadline = time.monotonic() + within
        while (found := find()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [(c.method, c.text[:60]) for c in self.fake.calls]
                raise AssertionError(f"no reply to {mid} containing {contains!r}; saw {seen}")
            try:
                await self.fake.wait_for("*", after=len(self.fake.calls), within=left)
            except AssertionError:
                pass
        return found.text

    async def row(self, request_id: str) -> RequestRecord:
        assert self.services is not None
        record = await self.services.engine.get_request(request_id)
        assert record is not None
        return record

    async def rows(self) -> list[RequestRecord]:
        assert self.services is not None
        records = []
        for c in self.fake.calls_of("sendVoice"):
            for button in c.buttons:
                rid = button["callback_data"].split(":", 1)[1]
                if rid not in [r.id for r in records]:
                    records.append(await self.row(rid))
        return records


class GatedPipeline:
    """The tiny pipeline, held at a gate until the test opens it (or `fail` is set)."""

    def __init__(self, inner: Any, *, fail: bool = False, open_gate: bool = False) -> None:
        self.inner, self.fail = inner, fail
        self.gate = threading.Event()
        self.entered = threading.Event()
        if open_gate:
            self.gate.set()

    def run(self, inputs: Any, options: Any, progress: Any = None) -> Any:
        self.entered.set()
        self.gate.wait(30)
        if self.fail:
            raise RuntimeError("model exploded (internal detail /srv/secret.py)")
        return self.inner.run(inputs, options, progress)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def bot_config(tmp_path: Path, fake: FakeBotAPI, **sections: dict[str, Any]) -> Config:
    telegram = {"token": TOKEN, "api_base_url": fake.api_base, "file_base_url": fake.file_base,
                "poll_timeout_s": 2.0, "progress_interval_s": 0.0, "admins": [ANA["id"]]}
    telegram.update(sections.pop("telegram", {}))
    return make_config(tmp_path, telegram=telegram, **sections)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotAPI]:
    server = FakeBotAPI(TOKEN)
    await server.start()
    yield server
    await server.close()


StartBot = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start_bot(tmp_path: Path, fake: FakeBotAPI, tiny_pipeline: Any
                    ) -> AsyncIterator[StartBot]:
    """`await start_bot(telegram={...}, jobs={...}, pipeline=...)` -> a running Harness."""
    started: list[Harness] = []

    async def start(*, pipeline: Any = None, **sections: dict[str, Any]) -> Harness:
        config = bot_config(tmp_path, fake, **sections)
        harness = Harness(fake, config, pipeline or tiny_pipeline)
        started.append(harness)
        return await harness.start()

    yield start
    for harness in started:
        if isinstance(harness.pipeline, GatedPipeline):
            harness.pipeline.gate.set()
        await harness.stop(engine_timeout=2.0)


@pytest.fixture
async def bot(start_bot: StartBot) -> Harness:
    """A bot with the default test settings."""
    return await start_bot()
