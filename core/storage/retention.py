"""Keeping the request log bounded: old finished rows become daily totals, old clips go.

`[storage] keep_days` says how long a finished request's row, and a clip not used since,
are kept. Pruning runs in small batches, each one short transaction, so it never holds the
database for long (SQLite has one writer) and a process that stops midway loses nothing:

- a batch of rows is deleted with `DELETE … RETURNING`, and what those rows counted is added
  to `daily_totals` in the same transaction — so a row is counted in the totals exactly
  when it is gone, even with two processes pruning one PostgreSQL database at once (a row
  only one of them deleted is added only by that one). An advisory lock (`exclusive`) lets
  one process prune at a time besides, so the others do not contend for the same rows;
- rows still needed to answer someone are never pruned: received, queued or running, and
  finished rows whose answer is still owed or being sent; nor the clips those rows point to.

The statistics (core/stats/collect.py) add the totals to the live rows, so the numbers an
admin sees are the same before and after a pruning.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.records import UNFINISHED, Delivery, RequestStatus
from core.storage.tables import (
    clip_files,
    clips,
    daily_totals,
    pictures,
    requests,
    shares,
)

# Any fixed 64-bit number names the lock among PostgreSQL advisory locks: "Sonify" and 2.
_PRUNE_LOCK_KEY = 0x536F6E69667902
STILL_OWED = (Delivery.OWED, Delivery.SENDING)


def utc_day(timestamp: float) -> str:
    """The UTC day (YYYY-MM-DD) a moment falls on, as the statistics count days."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def _prunable(before: float) -> Any:
    """Rows created before `before` that nobody waits for any more."""
    return (requests.c.created_at < before) & requests.c.status.not_in(UNFINISHED) & or_(
        requests.c.delivery.is_(None), requests.c.delivery.not_in(STILL_OWED))


class Retention:
    """The request log's pruning and the totals it leaves behind."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db
        self.is_postgres = db.dialect.name == "postgresql"

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[bool]:
        """Whether this process may prune now: False while another one is at it.

        PostgreSQL: a session advisory lock, held on a connection of its own for a whole
        pass (its transaction committed at once: an open one would keep VACUUM from the
        very rows pruning deletes) and let go when the pass ends or the process dies.
        SQLite's log has one process.
        """
        if not self.is_postgres:
            yield True
            return
        async with self.db.connect() as conn:
            held = bool((await conn.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                            {"key": _PRUNE_LOCK_KEY})).scalar())
            await conn.commit()
            try:
                yield held
            finally:
                if held:
                    await conn.execute(text("SELECT pg_advisory_unlock(:key)"),
                                       {"key": _PRUNE_LOCK_KEY})
                    await conn.commit()

    async def prune_requests(self, before: float, limit: int) -> int:
        """Delete up to `limit` finished rows created before `before`, adding what they
        counted to the daily totals; returns how many went."""
        async with self.db.begin() as conn:
            ids = [r[0] for r in await conn.execute(
                select(requests.c.id).where(_prunable(before))
                .order_by(requests.c.created_at).limit(limit))]
            if not ids:
                return 0
            # The condition again: a row that changed meanwhile (PostgreSQL re-reads it) stays.
            gone = (await conn.execute(
                requests.delete().where(requests.c.id.in_(ids), _prunable(before))
                .returning(requests.c.id, requests.c.platform, requests.c.status,
                           requests.c.created_at, requests.c.cache_hit, requests.c.times)
            )).all()
            if gone:
                await self._add_totals(conn, gone)
                gone_ids = [str(r[0]) for r in gone]
                await conn.execute(shares.delete().where(shares.c.request_id.in_(gone_ids)))
                await conn.execute(pictures.delete().where(
                    pictures.c.request_id.in_(gone_ids)))
            return len(gone)

    async def _add_totals(self, conn: AsyncConnection, rows: Sequence[Any]) -> None:
        counts: Counter[tuple[str, str, str]] = Counter()
        hits: Counter[tuple[str, str, str]] = Counter()
        for _id, platform, status, created_at, cache_hit, times in rows:
            key = (utc_day(created_at), platform, status)
            counts[key] += int(times or 1)
            hits[key] += int(bool(cache_hit) and status == RequestStatus.DONE)
        values = [{"day": day, "platform": platform, "status": status,
                   "request_count": n, "cache_hits": hits[(day, platform, status)]}
                  for (day, platform, status), n in counts.items()]
        dialect = postgresql if self.is_postgres else sqlite
        upsert = dialect.insert(daily_totals).values(values)
        await conn.execute(upsert.on_conflict_do_update(
            index_elements=[daily_totals.c.day, daily_totals.c.platform,
                            daily_totals.c.status],
            set_={"request_count": daily_totals.c.request_count
                  + upsert.excluded.request_count,
                  "cache_hits": daily_totals.c.cache_hits + upsert.excluded.cache_hits}))

    async def needed_clips(self) -> set[str]:
        """Clips that rows still owing their answer will send (never pruned)."""
        query = select(requests.c.files).where(requests.c.delivery.in_(STILL_OWED),
                                               requests.c.files.is_not(None))
        async with self.db.connect() as conn:
            return {Path(name).name.split(".", 1)[0]
                    for (files,) in await conn.execute(query) for name in (files or {}).values()}

    async def prune_clips(self, before: float, limit: int,
                          keep: set[str]) -> list[dict[str, str]]:
        """Forget up to `limit` clips not used since `before` (their index rows and stored
        bytes), except those in `keep`; returns the files of each one gone, to delete from
        disk."""
        async with self.db.begin() as conn:
            old = clips.c.last_used_at < before
            candidates = select(clips.c.clip_id).where(old).order_by(clips.c.last_used_at)
            if keep:
                candidates = candidates.where(clips.c.clip_id.not_in(sorted(keep)))
            ids = [r[0] for r in await conn.execute(candidates.limit(limit))]
            if not ids:
                return []
            gone = (await conn.execute(clips.delete().where(clips.c.clip_id.in_(ids), old)
                                       .returning(clips.c.clip_id, clips.c.files))).all()
            await conn.execute(clip_files.delete().where(
                clip_files.c.clip_id.in_([r[0] for r in gone])))
            return [dict(files or {}) for _id, files in gone]

    async def known_clips(self, clip_ids: Sequence[str]) -> set[str]:
        """Those of `clip_ids` the clip index still holds."""
        if not clip_ids:
            return set()
        query = select(clips.c.clip_id).where(clips.c.clip_id.in_(list(clip_ids)))
        async with self.db.connect() as conn:
            return {str(r[0]) for r in await conn.execute(query)}

    # what the statistics read -------------------------------------------------------------

    async def totals(self, since_day: str | None = None) -> list[tuple[str, str, int]]:
        """(platform, status, requests) of the pruned rows, optionally of days from
        `since_day` on."""
        query = select(daily_totals.c.platform, daily_totals.c.status,
                       func.sum(daily_totals.c.request_count)).group_by(
            daily_totals.c.platform, daily_totals.c.status)
        if since_day is not None:
            query = query.where(daily_totals.c.day >= since_day)
        async with self.db.connect() as conn:
            return [(str(p), str(s), int(n)) for p, s, n in await conn.execute(query)]

    async def per_day(self, since_day: str) -> list[tuple[str, str, int]]:
        """(day, platform, requests) of the pruned rows of days from `since_day` on."""
        query = (select(daily_totals.c.day, daily_totals.c.platform,
                        func.sum(daily_totals.c.request_count))
                 .where(daily_totals.c.day >= since_day)
                 .group_by(daily_totals.c.day, daily_totals.c.platform))
        async with self.db.connect() as conn:
            return [(str(d), str(p), int(n)) for d, p, n in await conn.execute(query)]

    async def cache_hit_counts(self) -> tuple[int, int]:
        """(cache hits, all done) of the pruned rows."""
        query = select(func.sum(daily_totals.c.cache_hits),
                       func.sum(daily_totals.c.request_count)).where(
            daily_totals.c.status == RequestStatus.DONE)
        async with self.db.connect() as conn:
            hits, done = (await conn.execute(query)).one()
        return int(hits or 0), int(done or 0)
