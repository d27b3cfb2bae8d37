"""Settling a rendered job: its clip, each request's row, then each request's answer — once.

The dispatcher of both backends (the local engine, and `sonify worker`) ends every job
here. A request's row is written before its handle hears `Done` or `Failed`, so no answer
goes out that the request log does not hold: each request is answered exactly once, now
or after a restart. While the database is away, recording waits (`Outage.wait_out`, up to
`[storage] outage_grace_s`); past that the rest of the job is handed back (`handed_back`:
its rows stay unfinished and its picture spooled, so the next start — or, with the redis
backend, the next worker — answers it). Cleaning up the spooled picture comes after the
answers and never holds them up or changes them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.config import VideoConfig
from core.errors import DatabaseUnavailable, GenerationFailed, ShuttingDown, UserFacingError
from core.jobs.cache import ClipCache
from core.jobs.events import Done, Failed, JobResult
from core.jobs.inflight import Job, Ticket
from core.jobs.journal import Journal
from core.jobs.model_runner import Outcome
from core.jobs.request import VIDEO_FORMAT
from core.jobs.rows import done_row, ended_row, timings_of
from core.jobs.spool import Spool
from core.jobs.video_jobs import answer_shape, write_answer_video
from core.models.pipeline import PipelineResult
from core.records import RequestStatus, RowChanges
from core.storage.request_log import RequestLog

logger = logging.getLogger(__name__)


def handed_back() -> Failed:
    """For a request whose outcome could not be recorded (the request log stayed away): it
    is not answered now; its row is left unfinished for the next start, which answers it."""
    return Failed(ShuttingDown("the request log is unavailable", code="unavailable",
                               resumes=True))


@dataclass(frozen=True)
class _Clip:
    """A rendered job's clip, encoded into the cache and indexed."""

    result: PipelineResult
    files: dict[str, Path]
    duration_s: float
    encode_s: float
    batch_size: int


class Settler:
    """Records how each job ended, then tells its requests; waits out database outages."""

    def __init__(self, request_log: RequestLog, cache: ClipCache, spool: Spool, *,
                 release: Callable[[str], None], clock: Callable[[], float],
                 journal: Journal, video: VideoConfig | None = None) -> None:
        self.video = video or VideoConfig()
        self.request_log = request_log
        self.journal = journal
        self.cache = cache
        self.spool = spool
        self._release = release  # a request is answered: what it held is free
        self._clock = clock

    async def finish(self, job: Job, outcome: Outcome,
                     seal: Callable[[], list[Ticket]]) -> None:
        """Settle `job` for each of its tickets (the first is the job's own); never raises.

        `seal()` closes the job to new riders and returns its tickets: called once the clip is
        in the cache, so that from then on an identical request is a cache hit.
        """
        tickets: list[Ticket] = []
        left: list[Ticket] = []
        answered: list[str] = []
        try:
            try:
                clip = await self._clip(job, outcome)
            finally:
                tickets = seal()
                left = list(tickets)
            error = outcome.error or GenerationFailed("generation failed")
            while left:
                ticket = left[0]
                if clip is not None:
                    await self._done(job, ticket, clip, leader=ticket is tickets[0])
                else:
                    await self._failed(ticket, error)
                answered.append(left.pop(0).handle.id)
        except DatabaseUnavailable:
            self._hand_back(left)
            left = []
        except Exception:
            logger.exception("finishing job %s failed", job.id)
        for ticket in left:  # a bug while recording: still one answer each
            try:
                await self._failed(ticket, GenerationFailed("generation failed"))
                answered.append(ticket.handle.id)
            except DatabaseUnavailable:
                self._hand_back([ticket])
        await self._clean_up(answered)

    async def _clip(self, job: Job, outcome: Outcome) -> _Clip | None:
        """Encode and index the clip; None when there is none (a failed render, or its
        encoding failed). DatabaseUnavailable when it could not be indexed in time."""
        result = outcome.result
        if result is None:
            return None
        try:
            started = time.perf_counter()
            files, duration = await asyncio.to_thread(self.cache.write, job.id, result.audio,
                                                      result.sample_rate)
            if job.request.video is not None:  # the answer is the clip with this sound
                mp4 = await asyncio.to_thread(write_answer_video, self.cache.root, job.id,
                                              job.request, result.audio, result.sample_rate,
                                              self.video)
                if mp4 is not None:
                    files[VIDEO_FORMAT] = mp4
            encode_s = time.perf_counter() - started

            async def index() -> None:
                await self.cache.add(clip_id=job.id, key=job.key, caption=result.caption,
                                     prompt=result.prompt, seed=job.seed, duration_s=duration,
                                     files=files)

            await self.request_log.outage.wait_out(index, f"the clip of job {job.id}")
        except DatabaseUnavailable:
            raise
        except Exception:
            logger.exception("storing the clip of job %s failed", job.id)
            return None
        return _Clip(result, files, duration, encode_s, outcome.batch_size)

    async def _done(self, job: Job, ticket: Ticket, clip: _Clip, *, leader: bool) -> None:
        """Record one request as done, then tell it (riders were served without a call)."""
        result = clip.result
        stages = {"caption_s": float(result.timings.get("caption_s", 0.0)),
                  "sound_s": float(result.timings.get("sound_s", 0.0)),
                  "encode_s": clip.encode_s}
        changes = done_row(created_at=ticket.created_at, started_at=job.started_at,
                           finished_at=self._clock(), caption=result.caption,
                           prompt=result.prompt, seed=job.seed, duration_s=clip.duration_s,
                           files=clip.files, cache_hit=not leader, batch_size=clip.batch_size,
                           score=result.score, stages=stages if leader else None)
        shape = answer_shape(job.request, clip.files, clip.duration_s)
        changes.update(RowChanges(output_kind=shape.output_kind, sound_fit=shape.sound_fit))

        async def record() -> None:
            await self.request_log.update(ticket.handle.id, **changes)

        await self.request_log.outage.wait_out(record, f"the outcome of request "
                                                       f"{ticket.handle.id}")
        self._release(ticket.handle.id)
        timings = timings_of(changes)
        self.journal.request_outcome(ticket.handle.id, ticket.handle.request, RequestStatus.DONE,
                                     text=result.caption, total_s=timings["total_s"],
                                     batch_size=clip.batch_size, cache_hit=not leader,
                                     timings=timings)
        ticket.handle.emit(Done(JobResult(
            request_id=ticket.handle.id, caption=result.caption, prompt=result.prompt,
            seed=job.seed, duration_s=clip.duration_s, files=dict(clip.files),
            cache_hit=not leader, batch_size=clip.batch_size, timings=timings,
            score=result.score, output_kind=shape.output_kind, sound_fit=shape.sound_fit,
            input_seconds=shape.input_seconds,
            video_cap_bytes=shape.video_cap_bytes)))

    async def _failed(self, ticket: Ticket, error: UserFacingError) -> None:
        """Record one request as failed, then tell it."""
        changes = ended_row(RequestStatus.FAILED, error.code, created_at=ticket.created_at,
                            finished_at=self._clock())

        async def record() -> None:
            await self.request_log.update(ticket.handle.id, **changes)

        try:
            await self.request_log.outage.wait_out(record, f"the outcome of request "
                                                           f"{ticket.handle.id}")
        except DatabaseUnavailable:
            raise
        except Exception:  # a bug, not an outage: the user still hears of the failure
            logger.exception("could not log the failure of %s", ticket.handle.id)
        self._release(ticket.handle.id)
        self.journal.request_outcome(ticket.handle.id, ticket.handle.request,
                                     RequestStatus.FAILED, reason=error.code,
                                     total_s=changes["total_s"])
        ticket.handle.emit(Failed(error))

    def _hand_back(self, tickets: Sequence[Ticket]) -> None:
        """Leave these requests for the next start: their rows stay as they are."""
        for ticket in tickets:
            self._release(ticket.handle.id)
            logger.warning("request %s is handed back unanswered: its outcome could not be "
                           "recorded; it is answered after the next start", ticket.handle.id)
            ticket.handle.emit(handed_back())

    async def _clean_up(self, request_ids: Sequence[str]) -> None:
        """Drop the spooled pictures of answered requests (a leftover is pruned later)."""
        for request_id in request_ids:
            async def delete(rid: str = request_id) -> None:
                await self.spool.delete(rid)

            try:
                await self.request_log.outage.wait_out(delete, f"the clean-up of {request_id}")
            except Exception as exc:
                logger.warning("could not drop the spooled picture of %s (%s)", request_id,
                               exc)
