"""Following a job to its one answer, whatever the platform."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.common.following import follow_job
from core.jobs.events import Done, JobHandle, JobResult
from core.jobs.request import JobRequest
from core.options import GenerationOptions


class Chat:
    """What the user sees: the answers posted to them."""

    lang = "en"

    def __init__(self) -> None:
        self.posted: list[str] = []

    async def show(self, text: str) -> None:
        self.posted.append(f"status: {text}")

    async def deliver(self, result: JobResult) -> None:
        self.posted.append(f"clip: {result.caption}")

    async def apologise(self, error: BaseException) -> None:
        self.posted.append(f"apology: {error}")

    def gave_up(self, error: BaseException) -> bool:
        return False

    async def announce(self, text: str) -> dict[str, Any]:
        self.posted.append(f"status: {text}")
        return {}

    async def on_event(self, event: object) -> None:
        return None


class FailingAfterPosting:
    """A request log that records "sending" but is gone by the time of "sent"."""

    def __init__(self) -> None:
        self.states: list[str] = []

    async def mark_delivery(self, request_id: str, state: str) -> None:
        if state == "sent":
            raise OSError("database gone away")
        self.states.append(state)


async def test_a_clip_posted_but_not_marked_sent_is_not_followed_by_an_apology() -> None:
    handle = JobHandle("r1", JobRequest("web", "u", "c", "text", GenerationOptions(),
                                        prompt="rain"))
    handle.emit(Done(JobResult("r1", "rain on a roof", "rain", 1, 1.0, {"ogg": Path("x")})))
    chat, delivery = Chat(), FailingAfterPosting()
    await follow_job(handle, chat, interval=0.0, delivery=delivery)
    # One answer: the clip. The row stays "sending", so a restart may post it again —
    # a second copy beats silence, but an apology after the clip would be wrong.
    assert chat.posted == ["clip: rain on a roof"]
    assert delivery.states == ["sending"]
