"""What a job backend provides to the one `Engine`: where jobs wait, who renders them, and
where the limits are counted.

The engine (core/jobs/engine.py) keeps every rule of core/jobs/contract.py — refusals and
their rows, limits, seeds, cache keys, cache hits, resuming after a restart — and asks its
transport only what differs between backends:

- `local` (core/jobs/local.py): the queue is this process's dispatcher and model runner;
  the counts are kept in memory (only the hourly one is read from the rows).
- `redis` (core/distributed/transport.py): the queue is arq on Redis and `sonify worker`
  processes render; every count is read from the rows that all processes share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from core.jobs.cache import CachedClip, ClipCache
from core.jobs.events import JobHandle
from core.jobs.request import JobRequest, Receipt
from core.jobs.spool import Spool
from core.limits import Counts
from core.records import RequestRecord

User = tuple[str, str]  # (platform, user id)


class Transport(Protocol):
    """One backend's queue and counts (see the module docstring)."""

    cache: ClipCache
    spool: Spool
    # Jobs queued or running outlive this process (workers elsewhere have them): after a
    # restart they are followed, not queued again.
    keeps_queue: bool
    # No other process answers this request log: a row of a platform that no adapter here
    # answers will never be answered, so a restart ends it (interrupted) instead of leaving
    # it to the process that serves that platform.
    only_process: bool

    async def start(self) -> None:
        """Take what this backend owns (the local log's lease, a Redis connection), prepare
        the clip cache, start the loops that move jobs on."""

    async def load_models(self) -> None:
        """Load the models where this process renders (ModelMissingError)."""

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline, not a cancel)
        """Take no more jobs; hand every job this process holds back (`stopping_failure`)."""

    def queue_length(self) -> int:
        """Jobs waiting to be rendered (as last known)."""

    def estimate_wait(self, user: User | None, counts: Counts) -> int:
        """Seconds until one of `user`'s jobs is done, or with None until the queue has
        drained (at least 1): the retry-after of a refusal."""

    async def admit(self, record: RequestRecord, rule: Callable[[Counts], None], *,
                    hour_since: float, slot: bool, place: bool) -> None:
        """Write `record` if `rule` (which raises the refusal) accepts the counts it is
        measured against — the user's requests in progress and since `hour_since`, and
        the requests waiting — with no other admission in between. The row then holds a
        user slot (`slot`) and a queue place (`place`) until `queue` or `let_go`.
        DuplicateRequest when its dedupe key is recorded already."""

    def hold(self, record: RequestRecord, *, place: bool) -> None:
        """A row left by the last run is carried on: it holds a user slot (and a place)."""

    def let_go(self, request_id: str) -> None:
        """A request this process admitted will not be queued here (refused, served from the
        cache, left for the next start): what it held is free."""

    async def in_flight(self, key: str) -> bool:
        """An identical job is queued or rendering, so a new request with this key can ride
        along with it (no render, no queue place of its own)."""

    async def queue(self, handle: JobHandle, request: JobRequest, receipt: Receipt,
                    key: str) -> CachedClip | None:
        """Queue a recorded request's job (its picture spooled first), or have it ride an
        identical one in flight; `handle` then hears how it goes. Returns the clip instead
        when an identical job ended meanwhile and its clip is cached (the engine serves it).
        Safe to call again after a failure part-way (a database outage is retried)."""

    async def follow(self, request_id: str) -> JobHandle | None:
        """A live handle on a job another process (or a worker) has; None where there is none
        to follow (one process: its jobs are its own)."""
