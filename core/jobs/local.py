"""The local backend: one process records, queues and renders (the embedded default).

Its queue is this process's `Dispatcher` (the fair queue, micro-batching, the model runner
in a thread), its pictures wait as files (`FileSpool`), and the per-user counts and the
queue bound are kept in memory (`Holds`) — only the hourly count is read from the rows. It
owns its request log: `start` takes the log's lease (core/storage/ownership.py), held
until the log is closed, so no second process answers the same rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence

from core.config import Config
from core.errors import DuplicateRequest
from core.jobs.cache import CachedClip, clip_cache
from core.jobs.dispatch import Dispatcher, Ticket
from core.jobs.engine import Engine
from core.jobs.events import JobHandle
from core.jobs.journal import Journal
from core.jobs.model_runner import ModelRunner
from core.jobs.request import JobRequest, Receipt
from core.jobs.rows import image_sha, with_video_columns
from core.jobs.spool import FileSpool, Spool
from core.jobs.transport import User
from core.limits import Counts
from core.models.pipeline import Pipeline
from core.records import RequestRecord, RequestStatus, RowChanges
from core.storage.request_log import RequestLog

logger = logging.getLogger(__name__)


class Holds:
    """What the requests this process admitted hold: a user slot each (counted against
    `per_user_concurrent`) until answered, and a queue place (counted against `max_queue`)
    until they are in the dispatcher's queue or need none. Keyed by request id, so letting
    a request go twice frees its hold once."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[User, bool]] = {}  # request id -> (user, holds a place)
        self._active: Counter[User] = Counter()
        self.places = 0
        # Weak: a user's lock lives while an admission holds or awaits it.
        self._locks: weakref.WeakValueDictionary[User, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    def lock_for(self, user: User) -> asyncio.Lock:
        """Serialises one user's admissions, so two at once cannot both take the last slot."""
        lock = self._locks.get(user)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[user] = lock
        return lock

    def active(self, user: User) -> int:
        return self._active[user]

    def hold(self, request_id: str, user: User, *, place: bool) -> None:
        if request_id in self._held:
            return
        self._held[request_id] = (user, place)
        self._active[user] += 1
        self.places += place

    def queued(self, request_id: str) -> None:
        """The request is in the queue (or rides a job): its place is no longer held."""
        held = self._held.get(request_id)
        if held is not None and held[1]:
            self._held[request_id] = (held[0], False)
            self.places -= 1

    def release(self, request_id: str) -> None:
        """The request is answered (or dropped): its slot and place are free."""
        held = self._held.pop(request_id, None)
        if held is None:
            return
        user, place = held
        self.places -= place
        self._active[user] -= 1
        if self._active[user] <= 0:
            del self._active[user]


class LocalTransport:
    """The `Transport` of one process (see the module docstring)."""

    keeps_queue = False
    only_process = True

    def __init__(self, config: Config, request_log: RequestLog, *,
                 pipeline_factory: Callable[[], Pipeline], journal: Journal,
                 clock: Callable[[], float] = time.time) -> None:
        jobs = config.jobs
        self.request_log = request_log
        self.cache = clip_cache(config, request_log, shared=False, clock=clock)
        self.spool: Spool = FileSpool(config.data_dir / "spool", config.video)
        self.holds = Holds()
        self.runner = ModelRunner(pipeline_factory, timeout_s=jobs.job_timeout_s)
        self.dispatcher = Dispatcher(jobs, request_log, self.cache, self.spool, self.runner,
                                     release=self.holds.release, clock=clock, journal=journal,
                                     video=config.video)

    @property
    def batches(self) -> Sequence[int]:
        """Sizes of the recent batches started (tests, benches)."""
        return self.dispatcher.batches

    async def start(self) -> None:
        """Take the request log's lease (RequestLogInUse when another process holds it),
        prepare the cache, drop pictures no unfinished row needs, start the dispatch loop."""
        # Before anything is read: the rows left unfinished are this process's to take up
        # only if no other process is answering them right now.
        await self.request_log.take_lease()
        try:
            await self.cache.start()
            unfinished = await self.request_log.unfinished()
            await self.spool.prune({r.id for r in unfinished})
        except BaseException:
            await self.request_log.release_lease()
            raise
        self.dispatcher.start()

    async def load_models(self) -> None:
        await self.runner.preload()

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline)
        """Let the running batch finish (bounded), keep the rest queued in the rows.

        The lease stays until the request log is closed: answers still being delivered after
        this are this process's, not a next one's to send again.
        """
        await self.dispatcher.stop(timeout)

    def queue_length(self) -> int:
        """Jobs waiting for the model runner (not counting the batch that is running)."""
        return len(self.dispatcher.queue)

    def estimate_wait(self, user: User | None, counts: Counts) -> int:
        if user is None:
            return self.dispatcher.estimate_drain()
        return self.dispatcher.estimate_user_wait(user)

    async def admit(self, record: RequestRecord, rule: Callable[[Counts], None], *,
                    hour_since: float, slot: bool, place: bool) -> None:
        user: User = (record.platform, record.user_id)
        async with self.holds.lock_for(user):
            if record.dedupe_key is not None:
                known = await self.request_log.find_dedupe(record.dedupe_key)
                if known is not None:
                    raise DuplicateRequest(known.id, known.created_at)
            in_hour, oldest = await self.request_log.user_window(user[0], user[1], hour_since)
            rule(Counts(user_active=self.holds.active(user), user_in_hour=in_hour,
                        oldest_in_hour=oldest,
                        waiting=self.queue_length() + self.holds.places))
            if slot:
                self.holds.hold(record.id, user, place=place)
            try:
                await self.request_log.insert(record)
            except BaseException:
                self.holds.release(record.id)
                raise

    def hold(self, record: RequestRecord, *, place: bool) -> None:
        self.holds.hold(record.id, (record.platform, record.user_id), place=place)

    def let_go(self, request_id: str) -> None:
        self.holds.release(request_id)

    async def in_flight(self, key: str) -> bool:
        return self.dispatcher.rideable(key) is not None

    async def queue(self, handle: JobHandle, request: JobRequest, receipt: Receipt,
                    key: str) -> CachedClip | None:
        rider = self.dispatcher.rideable(key) is not None
        if request.image is not None:
            await self.spool.write(receipt.id, request.image)
        await self.request_log.update(receipt.id, **with_video_columns(request, RowChanges(
            status=RequestStatus.QUEUED, started_at=None, cache_key=key,
            image_sha256=image_sha(request), caption=request.caption, prompt=request.prompt)))
        if rider and self.dispatcher.rideable(key) is None:
            # The job it meant to ride finished while its row was written: its clip is cached.
            hit = await self.cache.lookup(key)
            if hit is not None:
                return hit
        self.holds.queued(receipt.id)
        ticket = Ticket(handle, (request.platform, request.user_id), receipt.created_at)
        job = self.dispatcher.attach(ticket, request, receipt.seed, key)
        if job is not None and job.started_at is not None and job.tickets[0] is not ticket:
            started = max(job.started_at, ticket.created_at)
            try:  # its batch was marked before it joined: say it is being computed now
                await self.request_log.mark_started([handle.id], started, job.batch_size)
            except Exception:  # the job runs regardless; only the interim status is stale
                logger.exception("could not mark %s as running", handle.id)
        return None

    async def follow(self, request_id: str) -> JobHandle | None:
        """One process is the whole service: every job it follows is its own."""
        return None


def local_engine(config: Config, request_log: RequestLog, *,
                 pipeline_factory: Callable[[], Pipeline], journal: Journal | None = None,
                 clock: Callable[[], float] = time.time) -> Engine:
    """The job engine of the local backend; `journal`: where its outcomes are told (a new
    one by default)."""
    journal = journal or Journal()
    transport = LocalTransport(config, request_log, pipeline_factory=pipeline_factory,
                               journal=journal, clock=clock)
    return Engine(config, request_log, transport, journal=journal, clock=clock)
