"""What adapters get back from the job engine: a `JobHandle` and its events.

An adapter calls `JobEngine.submit` with a `JobRequest` and reads the returned
`JobHandle`: `async for event in handle.events()` for live updates, or
`await handle.result()` for the outcome only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import GenerationFailed, UserFacingError
from core.jobs.request import JobRequest
from core.records import OutputKind, SoundFit


@dataclass(frozen=True)
class JobResult:
    """A finished clip, encoded on disk in every format adapters serve."""

    request_id: str
    caption: str
    prompt: str
    seed: int
    duration_s: float
    files: dict[str, Path]  # "ogg" / "mp3" -> path (paths stay valid while cached)
    cache_hit: bool = False
    batch_size: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    score: float | None = None  # the kept take's CLAP score, when several takes were compared
    # A moving picture's answer: VIDEO (files["mp4"] is the clip with its sound),
    # AUDIO_ONLY (the MP4 would not fit the platform's cap), else AUDIO.
    output_kind: OutputKind = OutputKind.AUDIO
    sound_fit: SoundFit | None = None  # LOOPED: the sound repeats over the clip
    input_seconds: float | None = None  # the clip's length
    video_cap_bytes: int | None = None  # the platform's cap the MP4 had to fit

    def audio_path(self, fmt: str = "ogg") -> Path:
        return self.files[fmt]


@dataclass(frozen=True)
class Queued:
    position: int  # 1 = next in line


@dataclass(frozen=True)
class Started:
    batch_size: int = 1


@dataclass(frozen=True)
class Progress:
    step: int
    total: int


@dataclass(frozen=True)
class Done:
    result: JobResult


@dataclass(frozen=True)
class Failed:
    error: UserFacingError


JobEvent = Queued | Started | Progress | Done | Failed


class JobHandle:
    """A submitted job: its id, its event stream and its final outcome.

    Every consumer of `events()` sees the whole history from the start, so an
    adapter that subscribes late misses nothing. Producers (the engine) call
    `emit`; the stream ends after `Done` or `Failed`.
    """

    def __init__(self, request_id: str, request: JobRequest) -> None:
        self.id = request_id
        self.request = request
        self._history: list[JobEvent] = []
        self._changed = asyncio.Event()
        self._future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()

    @property
    def finished(self) -> bool:
        return self._future.done()

    @property
    def last_event(self) -> JobEvent | None:
        return self._history[-1] if self._history else None

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once the job has its outcome (soon, if it has it already)."""
        self._future.add_done_callback(lambda _future: callback())

    def emit(self, event: JobEvent) -> None:
        """Record an event (engine side). Events after the final one are ignored."""
        if self._future.done():
            return
        self._history.append(event)
        if isinstance(event, Done):
            self._future.set_result(event.result)
        elif isinstance(event, Failed):
            self._future.set_exception(event.error)
            self._future.exception()  # mark retrieved: nobody awaiting is not an error
        self._changed.set()
        self._changed = asyncio.Event()

    async def events(self) -> AsyncGenerator[JobEvent, None]:
        """Yield every event from the first; stop after `Done`/`Failed`."""
        index = 0
        while True:
            while index < len(self._history):
                event = self._history[index]
                index += 1
                yield event
                if isinstance(event, Done | Failed):
                    return
            await self._changed.wait()

    async def result(self) -> JobResult:
        """The result; raises the job's `UserFacingError` if it failed."""
        return await asyncio.shield(self._future)


def failure(code: str = "failed", message: str = "generation failed") -> Failed:
    """A `Failed` event for a worker-side failure with a user-facing code."""
    return Failed(GenerationFailed(message, code=code))
