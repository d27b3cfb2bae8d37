"""Requests that waited for an identical job in flight (`rider_of`) get its outcome.

Whoever sees the leader finish settles its riders — the worker that rendered it, or the
adapter process that wrote a rider just as the leader finished. Settling is a conditional
update (`SharedRequests.finish_open`), so a rider is answered once whoever gets there first.
"""

from __future__ import annotations

from core.storage.request_log import RequestLog, RequestRecord


async def settle_riders(request_log: RequestLog, leader: RequestRecord, now: float,
                        riders: list[RequestRecord] | None = None) -> list[str]:
    """Give the finished `leader`'s outcome to its open riders; returns the ids settled."""
    if not leader.finished:
        return []
    if riders is None:
        riders = await request_log.shared.riders(leader.id)
    settled: list[str] = []
    for rider in riders:
        total = max(0.0, now - rider.created_at)
        if leader.status == "done":
            values: dict[str, object] = dict(
                status="done", caption=leader.caption, prompt=leader.prompt, seed=leader.seed,
                cache_hit=True, batch_size=leader.batch_size, duration_s=leader.duration_s,
                files=leader.files, score=leader.score, started_at=leader.started_at,
                queue_wait_s=max(0.0, (leader.started_at or now) - rider.created_at),
                caption_s=0.0, sound_s=0.0, encode_s=0.0, finished_at=now, total_s=total)
        else:
            values = dict(status="failed", reason=leader.reason or "failed", finished_at=now,
                          total_s=total)
        settled += await request_log.shared.finish_open([rider.id], **values)
    return settled
