"""Helpers for the engine tests and the crash subprocess: pictures, requests, pipeline wrappers.

The wrappers sit around the real (tiny) `Pipeline` and only add misbehaviour:
raising for a marked picture, running out of memory above a batch size, hanging
until cancelled, or counting calls. The crash test's subprocess is
tests/core/jobs/contract/victim.py.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from PIL import Image

from core.config import Config
from core.intake.decode import DecodedImage, decode_image
from core.jobs.engine import Engine
from core.jobs.events import JobHandle
from core.jobs.local import local_engine
from core.jobs.request import JobRequest
from core.options import GenerationOptions
from core.storage.request_log import RequestLog

POISON_COLOR = (255, 0, 255)


def picture(n: int, *, color: tuple[int, int, int] | None = None, side: int = 48) -> DecodedImage:
    """A small distinct picture (numbered), decoded the way adapters decode uploads."""
    rng = np.random.default_rng(n)
    if color is None:
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    else:
        pixels = np.zeros((side, side, 3), dtype=np.uint8) + np.array(color, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    from core.config import ImagesConfig

    return decode_image(buf.getvalue(), ImagesConfig())


def image_request(config: Config, user: str, image: DecodedImage, *, platform: str = "telegram",
                  seed: int | None = None, admin: bool = False, seconds: float | None = None,
                  **extra: Any) -> JobRequest:
    options = GenerationOptions.from_config(config.generation, seconds=seconds)
    return JobRequest(platform=platform, user_id=user, chat_id=f"chat-{user}",
                      source_kind="photo", options=options, image=image, seed=seed,
                      is_admin=admin, **extra)


def text_request(config: Config, user: str, prompt: str, *, platform: str = "telegram",
                 seed: int | None = None, admin: bool = False, **extra: Any) -> JobRequest:
    options = GenerationOptions.from_config(config.generation)
    return JobRequest(platform=platform, user_id=user, chat_id=f"chat-{user}",
                      source_kind="text", options=options, prompt=prompt, seed=seed,
                      is_admin=admin, **extra)


def _is_poison(inp: Any) -> bool:
    img = getattr(inp, "image", None)
    return img is not None and img.getpixel((0, 0)) == POISON_COLOR


class WrappedPipeline:
    """The real pipeline plus test misbehaviour; records the size of every call."""

    def __init__(self, inner: Any, *, oom_above: int | None = None,
                 hang_prompt: str | None = None, delay_s: float = 0.0,
                 gate: threading.Event | None = None) -> None:
        self.inner = inner
        self.oom_above = oom_above
        self.hang_prompt = hang_prompt
        self.delay_s = delay_s
        self.gate = gate  # the first call waits for it: keeps the worker busy on demand
        self.calls: list[int] = []
        self.seeds: list[list[int]] = []
        self.thread_names: set[str] = set()
        self.lock = threading.Lock()

    def run(self, inputs: Sequence[Any], options: GenerationOptions,
            progress: Callable[[int, int], None] | None = None) -> list[Any]:
        with self.lock:
            first = not self.calls
            self.calls.append(len(inputs))
            self.seeds.append([i.seed for i in inputs])
            self.thread_names.add(threading.current_thread().name)
        if first and self.gate is not None and not self.gate.wait(30):
            raise RuntimeError("test gate never opened")
        if any(_is_poison(i) for i in inputs):
            raise ValueError("poisoned picture")
        if self.oom_above is not None and len(inputs) > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.hang_prompt is not None and any(
                getattr(i, "prompt", None) == self.hang_prompt for i in inputs):
            while True:  # a stuck render: only the engine's cancellation gets it out
                time.sleep(0.02)
                if progress is not None:
                    progress(0, 1)
        if self.delay_s:
            deadline = time.monotonic() + self.delay_s
            while time.monotonic() < deadline:
                time.sleep(0.01)
                if progress is not None:
                    progress(0, 1)
        return self.inner.run(inputs, options, progress)


@asynccontextmanager
async def running_engine(config: Config, pipeline: Any,
                         clock: Callable[[], float] | None = None) -> AsyncIterator[Engine]:
    """A started engine over a fresh log; stopped and closed afterwards."""
    request_log = await RequestLog.open(config.database_url,
                                       outage_grace_s=config.storage.outage_grace_s)
    extra = {"clock": clock} if clock is not None else {}
    engine = local_engine(config, request_log, pipeline_factory=lambda: pipeline, **extra)
    await engine.start()
    try:
        yield engine
    finally:
        gate = getattr(pipeline, "gate", None)
        if gate is not None:
            gate.set()  # a failed test must not leave the worker parked
        await engine.stop(10)
        await request_log.close()


async def gated_engine(config: Config, pipeline: Any
                       ) -> tuple[RequestLog, Engine, threading.Event]:
    """A started engine whose model calls wait at the returned gate (to stop it mid-batch)."""
    gate = threading.Event()
    request_log = await RequestLog.open(config.database_url,
                                       outage_grace_s=config.storage.outage_grace_s)
    engine = local_engine(config, request_log,
                       pipeline_factory=lambda: WrappedPipeline(pipeline, gate=gate))
    await engine.start()
    return request_log, engine, gate


async def restarted_engine(config: Config, pipeline: Any
                           ) -> tuple[RequestLog, Engine, list[JobHandle], int]:
    """A fresh engine on the same log after a stop or crash, with the jobs it resumed.

    Returns the request_log, the engine, the handles given to platform "telegram"'s recovery
    handler (after they have run) and the count `resume_recovered` reported.
    """
    request_log = await RequestLog.open(config.database_url,
                                       outage_grace_s=config.storage.outage_grace_s)
    engine = local_engine(config, request_log, pipeline_factory=lambda: pipeline)
    await engine.start()
    handed = Handed()
    engine.on_recovered("telegram", handed)
    resumed = await engine.resume_recovered()
    await handed.until(resumed)
    return request_log, engine, handed.handles, resumed


class Handed:
    """A platform's recovery handler that keeps what it is handed. The engine runs handlers
    as tasks, so `until` waits for them instead of guessing how many loop turns they need."""

    def __init__(self) -> None:
        self.handles: list[JobHandle] = []
        self._changed = asyncio.Condition()

    async def __call__(self, handle: JobHandle) -> None:
        async with self._changed:
            self.handles.append(handle)
            self._changed.notify_all()

    async def until(self, count: int, within: float = 10.0) -> list[JobHandle]:
        """The handles, once at least `count` have been handed over."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.handles) >= count),
                                   within)
        return self.handles


async def wait_for(handle: JobHandle, kind: type) -> Any:
    """The first event of `kind` in a handle's stream."""
    async for event in handle.events():
        if isinstance(event, kind):
            return event
    name = getattr(kind, "__name__", str(kind))
    raise AssertionError(f"{handle.id} ended without {name}: {handle.last_event}")


def events_of(handle: JobHandle) -> list[Any]:
    return list(handle._history)
