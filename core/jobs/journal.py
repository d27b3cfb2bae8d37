"""One console line per request as it ends: who asked for what, how it ended, how long it took.

Someone watching `sonify run` (or `sonify worker`) sees each request once, in the words of
the request log's row (which keeps everything else). Texts are shortened: a log is not the
place for a whole prompt.
"""

from __future__ import annotations

import logging

from core.jobs.request import JobRequest
from core.records import RequestRecord, RequestStatus

logger = logging.getLogger("sonify.requests")
TEXT_SHOWN = 60


def _shown(text: str | None) -> str:
    flat = " ".join((text or "").split())
    if not flat:
        return ""
    return f' "{flat[:TEXT_SHOWN]}…"' if len(flat) > TEXT_SHOWN else f' "{flat}"'


def log_outcome(request_id: str, who: str, kind: str, status: RequestStatus, *,
                text: str | None = None,
                reason: str | None = None, total_s: float | None = None,
                batch_size: int | None = None, cache_hit: bool = False,
                times: int = 1) -> None:
    """`request ID PLATFORM:USER KIND → STATUS …`, at INFO (WARNING for failures).

    `times`: a refusal folded into its row's count. Its 10th, 100th… are shown with the
    count; the others only at DEBUG — a flood is one line per order of magnitude.
    """
    parts = [f"request {request_id} {who} {kind} → {status}"]
    if reason:
        parts.append(f" ({reason})")
    if times > 1:
        parts.append(f" ×{times} in a minute")
    if total_s is not None:
        parts.append(f" in {total_s:.1f} s")
    if cache_hit:
        parts.append(", from the cache")
    elif batch_size:
        parts.append(f", batch of {batch_size}")
    parts.append(_shown(text))
    level = (logging.WARNING if status in (RequestStatus.FAILED, RequestStatus.INTERRUPTED)
             else logging.INFO)
    if times > 1 and not _power_of_ten(times):
        level = logging.DEBUG
    logger.log(level, "%s", "".join(parts))


def _power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


def log_request_outcome(request_id: str, request: JobRequest, status: RequestStatus, *,
                        text: str | None = None, reason: str | None = None,
                        total_s: float | None = None, batch_size: int | None = None,
                        cache_hit: bool = False, times: int = 1) -> None:
    """The line for a request at hand (its caption or prompt unless `text` is given)."""
    log_outcome(request_id, f"{request.platform}:{request.user_id}", request.source_kind,
                status, text=text or request.caption or request.prompt, reason=reason,
                total_s=total_s, batch_size=batch_size, cache_hit=cache_hit, times=times)


def log_record_outcome(record: RequestRecord) -> None:
    """The line for a finished row (a job that ended in another process, a restart)."""
    log_outcome(record.id, f"{record.platform}:{record.user_id}", record.source_kind,
                record.status, text=record.caption or record.prompt,
                reason=record.reason if record.status != RequestStatus.DONE else None,
                total_s=record.total_s, batch_size=record.batch_size,
                cache_hit=record.cache_hit)
