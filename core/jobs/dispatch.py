"""The dispatch loop: the fair queue, micro-batching, and answering finished jobs.

The dispatch loop takes the job at the head of the fair queue plus the next jobs
with equal options (up to ``max_batch``, waiting at most ``max_wait_ms`` for more),
hands them to the `ModelRunner`, then finishes each job in its own task (encode
the clip into the cache off the loop, update the rows, emit `Done`/`Failed`: the
`Settler`, core/jobs/settle.py) so the next batch can start while the last one is
being encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from functools import partial

from core.config import JobsConfig, VideoConfig
from core.errors import GenerationFailed, ShuttingDown, StorageUnavailable
from core.jobs.cache import ClipCache
from core.jobs.events import Failed, Progress, Queued, Started
from core.jobs.fair_queue import FairQueue
from core.jobs.inflight import Job, Ticket, User
from core.jobs.journal import Journal
from core.jobs.model_runner import ModelRunner, Outcome, WorkItem
from core.jobs.request import JobRequest
from core.jobs.settle import Settler
from core.jobs.spool import Spool
from core.models.pipeline import PipelineInput
from core.options import GenerationOptions
from core.storage.request_log import RequestLog

logger = logging.getLogger(__name__)

FIRST_BATCH_GUESS_S = 10.0  # wait estimate before any batch has been timed

__all__ = ["Dispatcher", "Job", "Ticket", "User", "stopping_failure"]


def stopping_failure() -> Failed:
    """For jobs left for the next start: the adapter may say so; the job will be answered."""
    return Failed(ShuttingDown("the service is stopping", code="shutting_down", resumes=True))


class Dispatcher:
    """Owns the waiting line, the jobs in flight and the dispatch loop."""

    def __init__(self, jobs: JobsConfig, request_log: RequestLog, cache: ClipCache, spool: Spool,
                 runner: ModelRunner, *, release: Callable[[str], None],
                 clock: Callable[[], float], journal: Journal,
                 video: VideoConfig | None = None) -> None:
        self.jobs = jobs
        self.request_log = request_log
        self.cache = cache
        self.spool = spool
        self.runner = runner
        self.settler = Settler(request_log, cache, spool, release=release, clock=clock,
                               journal=journal, video=video or VideoConfig())
        self._clock = clock
        self.queue: FairQueue[Job] = FairQueue(lambda j: j.user)
        self._inflight: dict[str, Job] = {}
        self._running: list[Job] = []
        self._batch_started = 0.0
        self._batch_times: deque[float] = deque(maxlen=20)
        self._finishing: dict[asyncio.Task[None], Job] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.batches: deque[int] = deque(maxlen=10_000)  # recent batch sizes (tests, benches)

    # queue side ----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._dispatch_loop(), name="sonify-dispatch")

    def rideable(self, key: str) -> Job | None:
        """The identical job in flight that a new request can ride along with."""
        job = self._inflight.get(key)
        return job if job is not None and not job.sealed else None

    def attach(self, ticket: Ticket, request: JobRequest, seed: int, key: str, *,
               solo: bool = False) -> Job | None:
        """Join an identical job in flight, or queue a new one (synchronous: no races).

        Returns the job the ticket now waits for (None when stopping: it waits for the
        next start). A `solo` job shares no model call: one that took a process down
        with it must not take its batch-mates down again.
        """
        if self._stopping:  # accepted while stopping: its row waits for the next start
            ticket.handle.emit(stopping_failure())
            return None
        job = self.rideable(key)
        if job is not None:
            job.tickets.append(ticket)
            if job.started_at is not None:
                ticket.handle.emit(Started(job.batch_size))
                if job.last_progress is not None:
                    ticket.handle.emit(job.last_progress)
            else:
                ticket.handle.emit(Queued(job.position))
            return job
        job = Job(id=ticket.handle.id, user=ticket.user, options=request.options,
                  request=request, seed=seed, key=key, tickets=[ticket], solo=solo)
        self._inflight[key] = job
        self.queue.push(job)
        self._refresh_positions()
        self._wakeup.set()
        return job

    def _refresh_positions(self) -> None:
        for pos, job in enumerate(self.queue.order(), start=1):
            if job.position != pos:
                job.position = pos
                for ticket in job.tickets:
                    ticket.handle.emit(Queued(pos))

    def estimate(self, batches_ahead: int) -> int:
        """Seconds until the running batch and `batches_ahead` more are done (at least 1)."""
        avg = (sum(self._batch_times) / len(self._batch_times) if self._batch_times
               else FIRST_BATCH_GUESS_S)
        remaining = 0.0
        if self._running:
            elapsed = time.monotonic() - self._batch_started
            remaining = self._running_left(elapsed, avg)
            if not self._batch_times:  # no batch timed yet: this one is the best measure
                avg = max(avg, elapsed + remaining)
        return max(1, math.ceil(remaining + batches_ahead * avg))

    def _running_left(self, elapsed: float, avg: float) -> float:
        """Seconds the running batch still needs. Within the average: the rest of it. Past it
        (a slow machine, the first batch of real models on a CPU), the average says nothing
        (it would say "about 1 s" however long is left): the diffusion steps done so far
        tell, at the pace they took; before the first step, as long again as the average."""
        if elapsed < avg:
            return avg - elapsed
        progress = next((job.last_progress for job in self._running
                         if job.last_progress is not None and job.last_progress.step > 0), None)
        if progress is None:
            return avg
        return elapsed * max(0, progress.total - progress.step) / progress.step

    def estimate_drain(self) -> int:
        return self.estimate(math.ceil(len(self.queue) / self.jobs.max_batch))

    def estimate_user_wait(self, user: User) -> int:
        """Roughly when one of `user`'s jobs will be done."""
        if any(t.user == user for job in self._running for t in job.tickets):
            return self.estimate(0)
        for pos, job in enumerate(self.queue.order(), start=1):
            if any(t.user == user for t in job.tickets):
                return self.estimate(math.ceil(pos / self.jobs.max_batch))
        return self.estimate(0)

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline, not a cancel)
        """Let the running batch finish within `timeout`; leave everything else queued."""
        self._stopping = True
        self._wakeup.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._loop_task is not None:
            await asyncio.wait({self._loop_task}, timeout=timeout)
            if not self._loop_task.done():
                logger.warning("shutdown timeout: the running batch is left for the next start")
                self.runner.cancel_running()
                self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        cut_short: list[Job] = []
        if self._finishing:
            await asyncio.wait(self._finishing, timeout=max(0.0, deadline - loop.time()))
            for task, job in list(self._finishing.items()):
                if not task.done():
                    task.cancel()
                    cut_short.append(job)
        # Their rows stay queued/running (and their images spooled) for the next start.
        for job in [*self._running, *cut_short, *self.queue.clear()]:
            for ticket in job.tickets:
                ticket.handle.emit(stopping_failure())
        self.runner.close()

    # dispatch loop ---------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            try:
                batch = await self._next_batch()
                if batch:
                    await self._run_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any job
                logger.exception("dispatch loop error")

    async def _next_batch(self) -> list[Job]:
        while not self.queue:
            if self._stopping:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.jobs.max_wait_ms / 1000
        while not self._stopping:
            head = self.queue.first()
            if head is None:
                return []
            if head.solo:
                return [head]
            batch = self.queue.take(partial(_batches_with, head.options), self.jobs.max_batch)
            left = deadline - loop.time()
            if len(batch) >= self.jobs.max_batch or left <= 0:
                return batch
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), left)
        return []

    async def _run_batch(self, batch: list[Job]) -> None:
        for job in batch:
            self.queue.remove(job)
        self._refresh_positions()
        now = self._clock()
        self._running = batch
        self._batch_started = time.monotonic()
        self.batches.append(len(batch))
        for job in batch:
            job.started_at, job.batch_size = now, len(batch)
            for ticket in job.tickets:
                ticket.handle.emit(Started(len(batch)))
        try:
            try:
                await self.request_log.mark_started(
                    [t.handle.id for job in batch for t in job.tickets], now, len(batch))
            except StorageUnavailable:
                # Only the interim status: the batch renders, its outcome waits for the log.
                logger.info("rendering a batch of %d not marked as running: the request log "
                            "is unavailable", len(batch))
            items = [WorkItem(_pipeline_input(job.request, job.seed),
                              on_progress=partial(self._on_progress, job), tag=job.id)
                     for job in batch]
            outcomes = await self.runner.run(items, batch[0].options)
        except Exception:
            logger.exception("batch failed outside the model call")
            outcomes = [Outcome(error=GenerationFailed("generation failed")) for _ in batch]
        self._batch_times.append(time.monotonic() - self._batch_started)
        self._running = []
        for job, outcome in zip(batch, outcomes, strict=True):
            task = asyncio.create_task(self._finish(job, outcome))
            self._finishing[task] = job
            task.add_done_callback(lambda t: self._finishing.pop(t, None))

    def _on_progress(self, job: Job, step: int, total: int) -> None:
        event = Progress(step, total)
        job.last_progress = event
        for ticket in job.tickets:
            ticket.handle.emit(event)

    async def _finish(self, job: Job, outcome: Outcome) -> None:
        await self.settler.finish(job, outcome, seal=lambda: self._seal(job))

    def _seal(self, job: Job) -> list[Ticket]:
        job.sealed = True
        if self._inflight.get(job.key) is job:
            del self._inflight[job.key]
        return list(job.tickets)


def _batches_with(options: GenerationOptions, job: Job) -> bool:
    return job.options == options and not job.solo


def _pipeline_input(request: JobRequest, seed: int) -> PipelineInput:
    video = request.video
    if video is not None:  # its frames, captioned with the batch's pictures (or its words)
        return PipelineInput(frames=video.clip.frames, caption=request.caption,
                             prompt=request.prompt, seed=seed)
    if request.image is not None:
        return PipelineInput(image=request.image.image, seed=seed)
    return PipelineInput(caption=request.caption, prompt=request.prompt, seed=seed)
