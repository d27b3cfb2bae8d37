"""The queue kept in the request log's rows, which several processes share (the redis
backend): limits, fairness and identical-job detection counted where the rows are.

With several processes (adapters and workers) no process can keep counts in memory: a
user's jobs at once, the queue bound, whose turn it is and whether an identical job is
already in flight are all read from the request log, in the transaction that writes the
row — under a PostgreSQL advisory lock, so two processes admitting at the same moment
cannot both take the last place. The rules themselves are the engine's (`core.limits`,
`core.jobs.fair_queue.fair_round`): this module only counts and writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Unpack

from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.errors import DuplicateRequest
from core.limits import Counts
from core.records import UNFINISHED, RequestRecord, RequestStatus, RowChanges
from core.storage.columns import row_values
from core.storage.tables import requests

# Any fixed 64-bit number names the lock among PostgreSQL advisory locks.
_ADMISSION_LOCK_KEY = 0x536F6E69667901  # "Sonify" and 1
WAITING = (RequestStatus.RECEIVED, RequestStatus.QUEUED)
IN_FLIGHT = (RequestStatus.QUEUED, RequestStatus.RUNNING)


# The fairness rule: a job's round from the round being served and the user's last one.
FairRound = Callable[[int, int | None], int]


class RowQueue:
    """Queries over the request log that every process must agree on."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db
        self.is_postgres = db.dialect.name == "postgresql"

    async def _lock(self, conn: AsyncConnection) -> None:
        # SQLite serialises writers itself; several processes are meant for PostgreSQL.
        if self.is_postgres:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": _ADMISSION_LOCK_KEY})

    async def admit(self, record: RequestRecord, *, hour_since: float,
                    check: Callable[[Counts], None]) -> None:
        """Insert `record` if `check` (which raises the refusal) accepts the counts.

        Raises DuplicateRequest for a dedupe key recorded before.
        """
        values = row_values(record)
        try:
            async with self.db.begin() as conn:
                await self._lock(conn)
                if record.dedupe_key is not None:
                    await _refuse_known(conn, record.dedupe_key)
                check(await self._counts(conn, record.platform, record.user_id, hour_since))
                await conn.execute(insert(requests).values(**values))
        except IntegrityError:
            if record.dedupe_key is None:
                raise
            # Written meanwhile by a writer outside the lock: answer with that row, as
            # `RequestLog.insert` does.
            async with self.db.connect() as conn:
                await _refuse_known(conn, record.dedupe_key)
            raise

    async def _counts(self, conn: AsyncConnection, platform: str, user_id: str,
                      hour_since: float) -> Counts:
        mine = (requests.c.platform == platform) & (requests.c.user_id == user_id)
        active = (await conn.execute(select(func.count()).where(
            mine, requests.c.status.in_(UNFINISHED)))).scalar() or 0
        hour = (await conn.execute(select(func.count(), func.min(requests.c.created_at)).where(
            mine, requests.c.created_at > hour_since,
            requests.c.status != RequestStatus.REJECTED))).one()
        waiting = (await conn.execute(select(func.count()).where(
            requests.c.status.in_(WAITING), requests.c.rider_of.is_(None)))).scalar() or 0
        return Counts(int(active), int(hour[0] or 0), hour[1], int(waiting))

    async def waiting(self) -> int:
        """Requests received or queued (riders aside): the queue's length."""
        async with self.db.connect() as conn:
            return int((await conn.execute(select(func.count()).where(
                requests.c.status.in_(WAITING), requests.c.rider_of.is_(None)))).scalar() or 0)

    async def queue_fairly(self, request_id: str, platform: str, user_id: str,
                           turn_rule: FairRound, **changes: Unpack[RowChanges]) -> int:
        """Mark a request queued with its turn (round, from `turn_rule`); returns it.

        The round being served is the highest one running (or the one before the first
        waiting); the user's last is that of their newest waiting job. So one user cannot
        fill a batch while others wait, whatever process queued whose job.
        """
        async with self.db.begin() as conn:
            await self._lock(conn)
            return await conn.run_sync(_queue_fairly, request_id, platform, user_id,
                                       turn_rule, changes)

    async def position(self, request_id: str) -> int | None:
        """1 for the next job to render, None when the request is not waiting."""
        async with self.db.connect() as conn:
            row = (await conn.execute(select(requests.c.fair_round, requests.c.created_at,
                                             requests.c.status)
                                      .where(requests.c.id == request_id))).first()
            if row is None or row[2] != RequestStatus.QUEUED or row[0] is None:
                return None
            ahead = (await conn.execute(select(func.count()).where(
                requests.c.status == RequestStatus.QUEUED, requests.c.rider_of.is_(None),
                (requests.c.fair_round < row[0])
                | ((requests.c.fair_round == row[0])
                   & (requests.c.created_at < row[1]))))).scalar() or 0
        return int(ahead) + 1

    async def leader(self, cache_key: str, exclude: str) -> RequestRecord | None:
        """An identical job in flight (queued or running, itself no rider) to wait for."""
        query = (select(requests).where(requests.c.cache_key == cache_key,
                                        requests.c.status.in_(IN_FLIGHT),
                                        requests.c.rider_of.is_(None),
                                        requests.c.id != exclude)
                 .order_by(requests.c.created_at).limit(1))
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        return RequestRecord.from_row(row) if row else None

    async def riders(self, leader_id: str) -> list[RequestRecord]:
        """Requests waiting for `leader_id`'s clip, not yet answered."""
        query = select(requests).where(requests.c.rider_of == leader_id,
                                       requests.c.status.in_(UNFINISHED))
        async with self.db.connect() as conn:
            return [RequestRecord.from_row(r) for r in await conn.execute(query)]

    async def stalled(self, older_than: float) -> list[tuple[str, int, float]]:
        """(id, round, created_at) of queued or running jobs (riders aside) created before
        `older_than`: the ones to hand to the queue again if Redis lost them."""
        query = (select(requests.c.id, requests.c.fair_round, requests.c.created_at)
                 .where(requests.c.status.in_(IN_FLIGHT),
                        requests.c.rider_of.is_(None), requests.c.created_at < older_than)
                 .order_by(requests.c.fair_round, requests.c.created_at))
        async with self.db.connect() as conn:
            return [(str(r[0]), int(r[1] or 0), float(r[2])) for r in await conn.execute(query)]

    async def attempt(self, request_id: str, worker: str) -> int | None:
        """Count one more render attempt of a job by `worker` (a job left running by a
        worker that died is queued again); returns the attempts so far, None when the job
        is not waiting or running any more."""
        async with self.db.begin() as conn:
            done = await conn.execute(
                update(requests).where(requests.c.id == request_id,
                                       requests.c.status.in_(IN_FLIGHT))
                .values(attempts=requests.c.attempts + 1, worker=worker,
                        status=RequestStatus.QUEUED))
            if not done.rowcount:
                return None
            return int((await conn.execute(select(requests.c.attempts)
                                           .where(requests.c.id == request_id))).scalar() or 0)

    async def give_back(self, request_id: str) -> None:
        """Undo an attempt that never got its turn (the worker stopped in an orderly way)."""
        async with self.db.begin() as conn:
            await conn.execute(update(requests).where(requests.c.id == request_id,
                                                      requests.c.attempts > 0)
                               .values(attempts=requests.c.attempts - 1))

    async def finish_open(self, request_ids: list[str],
                          **changes: Unpack[RowChanges]) -> list[str]:
        """Finish those of `request_ids` not finished yet; returns the ones this call
        finished — two processes settling one request cannot both answer it."""
        finished: list[str] = []
        async with self.db.begin() as conn:
            for request_id in request_ids:
                done = await conn.execute(
                    update(requests).where(requests.c.id == request_id,
                                           requests.c.status.in_(UNFINISHED)).values(**changes))
                if done.rowcount:
                    finished.append(request_id)
        return finished


def _queue_fairly(conn: Connection, request_id: str, platform: str, user_id: str,
                  turn_rule: FairRound, changes: RowChanges) -> int:
    waiting = (requests.c.status == RequestStatus.QUEUED) & requests.c.rider_of.is_(None)
    serving = conn.execute(select(func.max(requests.c.fair_round))
                           .where(requests.c.status == RequestStatus.RUNNING)).scalar()
    if serving is None:
        first = conn.execute(select(func.min(requests.c.fair_round)).where(waiting)).scalar()
        # Rounds count from what is waiting, so they stay small however long the service runs.
        serving = first - 1 if first is not None else 0
    user_last = conn.execute(select(func.max(requests.c.fair_round)).where(
        waiting, requests.c.platform == platform, requests.c.user_id == user_id,
        requests.c.id != request_id)).scalar()
    turn = turn_rule(int(serving), None if user_last is None else int(user_last))
    conn.execute(update(requests).where(requests.c.id == request_id)
                 .values(**changes, status=RequestStatus.QUEUED, fair_round=turn))
    return turn


async def _refuse_known(conn: AsyncConnection, dedupe_key: str) -> None:
    """Raise DuplicateRequest (with the recorded row's id) when `dedupe_key` is known."""
    found = (await conn.execute(select(requests.c.id, requests.c.created_at)
                                .where(requests.c.dedupe_key == dedupe_key))).first()
    if found is not None:
        raise DuplicateRequest(str(found[0]), float(found[1]))
