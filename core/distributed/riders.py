"""Requests that waited for an identical job in flight (`rider_of`) get its outcome.

Whoever sees the leader finish settles its riders — the worker that rendered it, or the
adapter process that wrote a rider just as the leader finished. Settling is a conditional
update (`RowQueue.finish_open`), so a rider is answered once whoever gets there first.
"""

from __future__ import annotations

from core.jobs.rows import done_row, ended_row
from core.records import RequestRecord, RequestStatus
from core.storage.request_log import RequestLog


async def settle_riders(request_log: RequestLog, leader: RequestRecord, now: float,
                        riders: list[RequestRecord] | None = None) -> list[str]:
    """Give the finished `leader`'s outcome to its open riders; returns the ids settled."""
    if not leader.finished:
        return []
    if riders is None:
        riders = await request_log.row_queue.riders(leader.id)
    settled: list[str] = []
    for rider in riders:
        if leader.status == RequestStatus.DONE:
            changes = done_row(
                created_at=rider.created_at, started_at=leader.started_at, finished_at=now,
                caption=leader.caption or "", prompt=leader.prompt or "", seed=leader.seed or 0,
                duration_s=leader.duration_s or 0.0, files=leader.files or {}, cache_hit=True,
                batch_size=leader.batch_size or 1, score=leader.score)
        else:
            changes = ended_row(leader.status, leader.reason or "failed",
                                created_at=rider.created_at, finished_at=now)
        settled += await request_log.row_queue.finish_open([rider.id], **changes)
    return settled
