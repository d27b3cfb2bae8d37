"""Background tasks of an adapter: answers in flight, drained in order when it stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from core.jobs.events import JobHandle

logger = logging.getLogger(__name__)

# How long answers already being sent may take when the adapter stops.
STOP_GRACE_S = 10.0


@dataclass
class _Watch:
    handle: JobHandle | None  # the job the task follows, once there is one
    waiting: bool  # before its job: fetching a picture (its row stays for the next start)


class BackgroundTasks:
    """Tasks an adapter started for its users, each with the job it waits for (if any).

    On `drain`, a task still waiting — fetching a picture, or for an unfinished job — is
    cancelled at once (its row stays in the request log and the next start answers it);
    a task that is delivering an answer gets `grace_s` to finish.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: dict[asyncio.Task[None], _Watch] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None], handle: JobHandle | None = None, *,
              waiting: bool = False) -> None:
        """Run `coro` in the background, kept referenced until it ends.

        `waiting`: it starts by fetching a recorded request's picture (see `follows`).
        """
        task = asyncio.create_task(coro)
        self._tasks[task] = _Watch(handle, waiting)
        self._idle.clear()
        task.add_done_callback(self._done)

    def follows(self, handle: JobHandle) -> None:
        """Note that the current task now waits for `handle` (it was spawned before the job)."""
        task = asyncio.current_task()
        if task is not None and task in self._tasks:
            self._tasks[task] = _Watch(handle, waiting=False)

    def delivering(self, task: asyncio.Task[None]) -> bool:
        """True when the task is sending an answer rather than waiting for a picture or job."""
        watch = self._tasks.get(task)
        if watch is None:
            return True
        if watch.handle is None:
            return not watch.waiting
        return watch.handle.finished

    async def drain(self, grace_s: float = STOP_GRACE_S) -> None:
        """Cancel tasks waiting on unfinished jobs; give the others `grace_s` to finish."""
        tasks = set(self._tasks)
        for task in tasks:
            if not self.delivering(task):
                task.cancel()
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace_s)
        for task in late:
            task.cancel()
        if late:
            logger.warning("%s: %d answer(s) cut short by the stop", self.name, len(late))
            await asyncio.wait(late, timeout=1.0)

    async def idle(self) -> None:
        """Wait until every task has ended (each answer sent, or given up)."""
        await self._idle.wait()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: a background task failed", self.name, exc_info=task.exception())
