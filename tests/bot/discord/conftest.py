"""Fixtures: a fake Discord on loopback and a Sonify Discord bot (real discord.py) talking to it."""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from bot.discord.adapter import DiscordAdapter
from core.config import Config
from core.services import Services
from tests.bot.discord.fake_discord import WATCHED, FakeDiscord
from tests.conftest import make_config

TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GfAkEt.fake-bot-token-0123456789abcd"


def png_bytes(seed: int = 0, size: int = 48) -> bytes:
    """A small PNG; different seeds give different pixels (no cache hits between them)."""
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def read_clip(data: bytes) -> tuple[np.ndarray, int, str]:
    """(samples, rate, subtype) of an audio file, as soundfile reads it."""
    info = sf.info(io.BytesIO(data))
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    return audio, rate, f"{info.format}/{info.subtype}"


class GatedPipeline:
    """The tiny pipeline, held at a gate: keeps a job "running" as long as a test needs."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()

    def run(self, inputs: Sequence[Any], options: Any, progress: Any = None) -> list[Any]:
        self.entered.set()
        self.gate.wait(30)
        return self.inner.run(inputs, options, progress)


class BrokenPipeline:
    """A pipeline whose every call fails, as a crashed model would."""

    def run(self, inputs: Sequence[Any], options: Any, progress: Any = None) -> list[Any]:
        raise RuntimeError("model exploded")


class Bot:
    """One running Sonify (services + Discord adapter) against the fake."""

    def __init__(self, fake: FakeDiscord, config: Config, pipeline: Any) -> None:
        self.fake, self.config, self.pipeline = fake, config, pipeline
        self.services: Services | None = None
        self.adapter: DiscordAdapter | None = None

    async def start(self) -> Bot:
        seen = len(self.fake.identified)
        self.services = await Services.create(self.config, pipeline_factory=lambda: self.pipeline)
        self.adapter = DiscordAdapter(self.services)
        await self.adapter.start()
        await self.services.engine.resume_recovered()
        # READY and GUILD_CREATE go out right after IDENTIFY, so later events follow them.
        await self.fake.until(lambda: len(self.fake.identified) > seen, timeout=15)
        return self

    async def stop(self) -> None:
        if self.services is not None:
            await self.services.engine.stop(5)
        if self.adapter is not None:
            await self.adapter.stop()
        if self.services is not None:
            await self.services.close()
        self.services = self.adapter = None

    async def request_row(self, request_id: str) -> Any:
        assert self.services is not None
        return await self.services.engine.get_request(request_id)


def bot_config(fake: FakeDiscord, tmp_path: Path, discord: dict[str, Any] | None = None,
               **sections: dict[str, Any]) -> Config:
    return make_config(tmp_path, discord={
        "token": TOKEN, "api_base_url": fake.api_url, "gateway_url": fake.gateway_url,
        "channels": [WATCHED], "sync_commands": False, "progress_interval_s": 0.0,
        **(discord or {})}, **sections)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def make_bot(fake: FakeDiscord, tmp_path: Path, tiny_pipeline: Any
                   ) -> AsyncIterator[Any]:
    """`await make_bot(discord={...}, jobs={...}, pipeline=...)` starts a bot (all stop later)."""
    bots: list[Bot] = []

    async def start(discord: dict[str, Any] | None = None, pipeline: Any = None,
                    **sections: dict[str, Any]) -> Bot:
        bot = Bot(fake, bot_config(fake, tmp_path, discord, **sections),
                  pipeline if pipeline is not None else tiny_pipeline)
        bots.append(bot)
        return await bot.start()

    yield start
    for bot in bots:
        gate = getattr(bot.pipeline, "gate", None)
        if gate is not None:
            gate.set()
        await bot.stop()


@pytest.fixture
async def bot(make_bot: Any) -> Bot:
    return await make_bot()
