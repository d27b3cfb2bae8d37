"""One console line per request as it ends: who asked for what, how it ended, how long it took.

Someone watching `sonify run` (or `sonify worker`) sees each request once, in the words of
the request log's row (which keeps everything else). Texts are shortened: a log is not the
place for a whole prompt.

Every request's outcome passes here, so this is also where the process's metrics hear of
it: each outcome is an `OutcomeLine`, handed to the listeners `subscribe`d to the
process's `Journal` at start-up (core/ops/metrics.py) and logged with its fields
(`core.logs.FIELDS`) for JSON logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from core.jobs.request import JobRequest
from core.logs import FIELDS
from core.records import RequestRecord, RequestStatus

logger = logging.getLogger("sonify.requests")
TEXT_SHOWN = 60


@dataclass(frozen=True)
class OutcomeLine:
    """How one request ended, as its line says it."""

    request_id: str
    platform: str
    user_id: str
    kind: str
    status: RequestStatus  # done | failed | rejected | interrupted
    code: str | None = None
    total_s: float | None = None
    batch_size: int | None = None
    cache_hit: bool = False
    times: int = 1  # a refusal folded into its row: how many it counts now
    # The job's stage times, where it was rendered in this process (core/jobs/settle.py);
    # None for an outcome read from a row (another process rendered it) or a refusal.
    timings: Mapping[str, float] | None = field(default=None, compare=False)

    @property
    def outcome(self) -> str:
        """done, cache_hit, refused, failed or interrupted."""
        if self.status == RequestStatus.DONE:
            return "cache_hit" if self.cache_hit else "done"
        return "refused" if self.status == RequestStatus.REJECTED else str(self.status)

    def fields(self) -> dict[str, object]:
        """What a JSON log line carries besides its message."""
        return {"request_id": self.request_id, "platform": self.platform,
                "user_id": self.user_id, "kind": self.kind, "outcome": self.outcome,
                "code": self.code, "seconds": self.total_s, "batch_size": self.batch_size,
                "times": self.times}


OutcomeListener = Callable[[OutcomeLine], None]


class Journal:
    """Where a process tells how each request ended: one log line each, and the listeners
    (its metrics) that `subscribe`d. The services of a process build one and hand it to the
    engine and its backend (or to a `sonify worker`); nothing else holds listeners."""

    def __init__(self) -> None:
        self._listeners: list[OutcomeListener] = []

    def subscribe(self, listener: OutcomeListener) -> Callable[[], None]:
        """Hear of every outcome from now on; returns what ends it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def outcome(self, request_id: str, who: str, kind: str, status: RequestStatus, *,
                text: str | None = None, reason: str | None = None,
                total_s: float | None = None, batch_size: int | None = None,
                cache_hit: bool = False, times: int = 1,
                timings: Mapping[str, float] | None = None) -> None:
        """`request ID PLATFORM:USER KIND → STATUS …`, at INFO (WARNING for failures).

        `who` is ``PLATFORM:USER``. `times`: a refusal folded into its row's count. Its 10th,
        100th… are shown with the count; the others only at DEBUG — a flood is one line per
        order of magnitude (the listeners hear of each one).
        """
        platform, _, user_id = who.partition(":")
        line = OutcomeLine(request_id, platform, user_id, kind, status, reason, total_s,
                           batch_size, cache_hit, times, timings)
        for listener in list(self._listeners):
            try:
                listener(line)
            except Exception:  # metrics must never stand between a request and its answer
                logger.exception("an outcome listener failed")
        _log_line(line, who, text)

    def request_outcome(self, request_id: str, request: JobRequest, status: RequestStatus, *,
                        text: str | None = None, reason: str | None = None,
                        total_s: float | None = None, batch_size: int | None = None,
                        cache_hit: bool = False, times: int = 1,
                        timings: Mapping[str, float] | None = None) -> None:
        """The line for a request at hand (its caption or prompt unless `text` is given);
        `timings`: its stage times, where this process rendered it."""
        self.outcome(request_id, f"{request.platform}:{request.user_id}", request.source_kind,
                     status, text=text or request.caption or request.prompt, reason=reason,
                     total_s=total_s, batch_size=batch_size, cache_hit=cache_hit,
                     times=times, timings=timings)

    def record_outcome(self, record: RequestRecord) -> None:
        """The line for a finished row (a job that ended in another process, a restart)."""
        self.outcome(record.id, f"{record.platform}:{record.user_id}", record.source_kind,
                     record.status, text=record.caption or record.prompt,
                     reason=record.reason if record.status != RequestStatus.DONE else None,
                     total_s=record.total_s, batch_size=record.batch_size,
                     cache_hit=record.cache_hit)


def _shown(text: str | None) -> str:
    flat = " ".join((text or "").split())
    if not flat:
        return ""
    return f' "{flat[:TEXT_SHOWN]}…"' if len(flat) > TEXT_SHOWN else f' "{flat}"'


def _log_line(line: OutcomeLine, who: str, text: str | None) -> None:
    parts = [f"request {line.request_id} {who} {line.kind} → {line.status}"]
    if line.code:
        parts.append(f" ({line.code})")
    if line.times > 1:
        parts.append(f" ×{line.times} in a minute")
    if line.total_s is not None:
        parts.append(f" in {line.total_s:.1f} s")
    if line.cache_hit:
        parts.append(", from the cache")
    elif line.batch_size:
        parts.append(f", batch of {line.batch_size}")
    parts.append(_shown(text))
    level = (logging.WARNING
             if line.status in (RequestStatus.FAILED, RequestStatus.INTERRUPTED)
             else logging.INFO)
    if line.times > 1 and not _power_of_ten(line.times):
        level = logging.DEBUG
    logger.log(level, "%s", "".join(parts), extra={FIELDS: line.fields()})


def _power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1
