"""Who may have another job now: per-user limits, the queue bound, and the places held.

A request holds a *user slot* (counted against `per_user_concurrent`) from the moment it is
accepted until it is answered, and a *queue place* (counted against `max_queue`) until it
is in the dispatcher's queue or needs no place (a cache hit, a rider of an identical job).
A recorded request whose picture is still being fetched holds both, so the cheap checks
refuse an overload before any download or decode is paid for.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable

from core.config import JobsConfig
from core.errors import QueueFull, RateLimited
from core.jobs.dispatch import Dispatcher, User
from core.storage.request_log import RequestLog

HOUR_S = 3600.0


class Admission:
    """The limits, counted where the requests are: this process's engine and its request log."""

    def __init__(self, jobs: JobsConfig, request_log: RequestLog, dispatcher: Dispatcher, *,
                 clock: Callable[[], float]) -> None:
        self.jobs = jobs
        self.request_log = request_log
        self.dispatcher = dispatcher
        self._clock = clock
        self._active: dict[User, int] = {}
        self._places = 0  # queue places held by requests not (yet) in the queue
        # Weak: a user's lock lives while a submission holds or awaits it.
        self._locks: weakref.WeakValueDictionary[User, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    def lock_for(self, user: User) -> asyncio.Lock:
        """Serialises one user's admissions, so two at once cannot both take the last slot."""
        lock = self._locks.get(user)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[user] = lock
        return lock

    def queue_length(self) -> int:
        return len(self.dispatcher.queue)

    async def check_hourly(self, user: User, per_hour: int | None = None) -> None:
        """RateLimited when `user` had their hour's requests: the config's limit, or the
        chat's narrower `per_hour`."""
        now = self._clock()
        count, oldest = await self.request_log.user_window(user[0], user[1], now - HOUR_S)
        limit = self.jobs.per_user_per_hour if per_hour is None \
            else min(per_hour, self.jobs.per_user_per_hour)
        if count >= limit:
            wait = (oldest or now) + HOUR_S - now
            raise RateLimited("hourly limit reached", code="hourly_limit",
                              retry_after_s=max(1, math.ceil(wait)))

    def check_running(self, user: User) -> None:
        if self._active.get(user, 0) >= self.jobs.per_user_concurrent:
            raise RateLimited("too many requests running", code="too_many_running",
                              retry_after_s=self.dispatcher.estimate_user_wait(user))

    def check_capacity(self) -> None:
        if self.queue_length() + self._places >= self.jobs.max_queue:
            raise QueueFull("queue full", code="busy",
                            retry_after_s=self.dispatcher.estimate_drain())

    def hold(self, user: User, *, place: bool) -> None:
        """A request of `user` is accepted (and holds a queue place, if `place`)."""
        self._active[user] = self._active.get(user, 0) + 1
        self._places += place

    def release_place(self) -> None:
        """A held queue place is no longer needed (queued, served from cache, or dropped)."""
        self._places = max(0, self._places - 1)

    def release(self, user: User) -> None:
        """One of `user`'s requests is answered (or dropped)."""
        left = self._active.get(user, 0) - 1
        if left > 0:
            self._active[user] = left
        else:
            self._active.pop(user, None)
