"""A job in flight and the requests it answers: its own, and identical ones riding along."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.jobs.events import JobHandle, Progress
from core.jobs.request import JobRequest
from core.options import GenerationOptions

User = tuple[str, str]  # (platform, user id)


@dataclass(eq=False)
class Ticket:
    """One request answered by a job (the job's own, or an identical one riding along)."""

    handle: JobHandle
    user: User
    created_at: float


@dataclass(eq=False)
class Job:
    """One computation: its input and every request waiting for it."""

    id: str
    user: User
    options: GenerationOptions
    request: JobRequest
    seed: int
    key: str
    tickets: list[Ticket] = field(default_factory=list)
    position: int = 0
    started_at: float | None = None
    batch_size: int = 1
    last_progress: Progress | None = None
    sealed: bool = False  # answered (or being answered): no more riders
    solo: bool = False  # rendered in a batch of its own (it was in a batch that crashed)
