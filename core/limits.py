"""Who may have another job now: the per-user limits and the queue bound, as one rule.

Both job backends measure a new request against the same `Counts` — the user's requests
in progress and in the last hour, and the requests waiting — and ask `Limits.check`;
they differ only in where the counts come from (this process's memory, or the request
log's rows that several processes share). The web page's per-address hourly limit tells
its wait with the same formula (`hourly_retry_after`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from core.config import JobsConfig
from core.errors import QueueFull, RateLimited

HOUR_S = 3600.0

# Seconds until one of a user's jobs is done (the user's platform and id), or with None
# until the queue has drained: the "try again in about …" of a refusal.
WaitEstimate = Callable[[tuple[str, str] | None], int]


@dataclass(frozen=True)
class Counts:
    """What a new request is measured against."""

    user_active: int  # the user's requests received, queued or running
    user_in_hour: int  # the user's accepted requests in the last hour
    oldest_in_hour: float | None  # when the oldest of those was made
    waiting: int  # requests received or queued that will need a render (the queue bound)


def hourly_retry_after(oldest: float | None, now: float) -> int:
    """Whole seconds until the oldest request of the last hour leaves it (at least 1)."""
    return max(1, math.ceil((oldest if oldest is not None else now) + HOUR_S - now))


@dataclass(frozen=True)
class Limits:
    """`[jobs] per_user_concurrent`, `per_user_per_hour` and `max_queue`."""

    jobs: JobsConfig

    def check(self, counts: Counts, *, user: tuple[str, str], now: float, is_admin: bool,
              slot: bool, place: bool, extra_picture: bool = False,
              per_hour: int | None = None, estimate: WaitEstimate) -> None:
        """Raise the refusal (RateLimited, QueueFull) of a request measured by `counts`.

        `slot`: the request will hold one of the user's jobs at once (all but cache hits);
        `place`: it will need a render of its own (all but cache hits and riders of an
        identical job in flight). Admins skip both per-user limits, not the queue bound; the
        second picture of one message is not refused as "in progress" (`extra_picture`).
        `per_hour`: the chat's own hourly limit (core/settings), which only narrows the config's.
        """
        jobs = self.jobs
        if not is_admin:
            hourly = jobs.per_user_per_hour if per_hour is None \
                else min(per_hour, jobs.per_user_per_hour)
            if counts.user_in_hour >= hourly:
                raise RateLimited("hourly limit reached", code="hourly_limit",
                                  retry_after_s=hourly_retry_after(counts.oldest_in_hour, now))
            if slot and not extra_picture and counts.user_active >= jobs.per_user_concurrent:
                raise RateLimited("too many requests running", code="too_many_running",
                                  retry_after_s=estimate(user))
        if place and counts.waiting >= jobs.max_queue:
            raise QueueFull("queue full", code="busy", retry_after_s=estimate(None))
