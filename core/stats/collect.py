"""Usage statistics from the request log: totals, cache hit rate, latency, top users, and
the jobs each worker computed (the redis backend).

Days are UTC days. Latency percentiles cover the last 7 days of jobs the models
actually computed (cache hits answer in milliseconds and would hide the real wait);
the cache hit rate covers every finished job in the log.

Rows older than `[storage] keep_days` (at least `MIN_KEEP_DAYS`, longer than every window
read row by row here) are pruned into daily totals (core/storage/retention.py): counts add
those totals to the live rows, so pruning changes no number an admin sees. A refusal row
counts the refusals folded into it (`times`).
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from core.records import RequestStatus
from core.storage.request_log import ChatFilter, RequestLog

DAY_S = 86_400.0
WEEK_DAYS = 7
CHART_DAYS = 14
TOP_USERS = 5


@dataclass(frozen=True)
class Totals:
    """Request counts over one period."""

    total: int = 0
    by_platform: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TopUser:
    """One of the most active users of the last 7 days."""

    platform: str
    user_id: str
    count: int  # requests in 7 days, refusals not counted
    name: str | None = None  # the newest readable name the platform gave, where it gave one


@dataclass(frozen=True)
class WorkerStats:
    """One `sonify worker` (redis backend) over the last 7 days: the jobs it computed."""

    name: str
    jobs: int
    mean_batch: float


@dataclass(frozen=True)
class DayStats:
    """One UTC day: requests per platform and total-latency percentiles of computed jobs."""

    day: str  # YYYY-MM-DD
    by_platform: dict[str, int]
    total_p50_s: float | None
    total_p95_s: float | None


@dataclass(frozen=True)
class Stats:
    """Everything an admin's stats reply shows."""

    generated_at: float
    today: Totals
    week: Totals
    all_time: Totals
    cache_hits: int
    done: int
    queue_wait_p50_s: float | None
    queue_wait_p95_s: float | None
    total_p50_s: float | None
    total_p95_s: float | None
    queue_length: int
    top_users: list[TopUser]
    days: list[DayStats]  # oldest first, CHART_DAYS of them
    workers: list[WorkerStats] = field(default_factory=list)  # most jobs first; redis only
    # 7 days: requests by what came in (photo, animation, video) and answers by what went out
    # (audio, video, audio_only: the video was too large for the platform).
    inputs: dict[str, int] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)
    # Only some chats' requests (one server's, one group's): `all_time` then counts the rows
    # kept (`[storage] keep_days`), as the daily totals of older ones hold no chats.
    scoped: bool = False

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cache_hits / self.done if self.done else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _totals(groups: list[tuple[str, str, int]]) -> Totals:
    by_platform: Counter[str] = Counter()
    by_status: Counter[str] = Counter()
    for platform, status, n in groups:
        by_platform[platform] += n
        by_status[status] += n
    return Totals(sum(by_platform.values()), dict(by_platform), dict(by_status))


def _day_start(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _first_whole_day(since: float) -> str:
    """The first UTC day that lies wholly after `since` (daily totals cannot be split)."""
    start = _day_start(since)
    if start.timestamp() < since:
        start += timedelta(days=1)
    return start.strftime("%Y-%m-%d")


async def _totals_since(request_log: RequestLog, since: float | None = None,
                        chats: ChatFilter | None = None) -> Totals:
    """Requests created after `since`: the live rows plus the daily totals of pruned ones
    (which hold no chats, so none for `chats`)."""
    pruned = [] if chats is not None else await request_log.retention.totals(
        None if since is None else _first_whole_day(since))
    return _totals([*await request_log.counts(since, chats=chats), *pruned])


async def collect_stats(request_log: RequestLog, queue_length: int = 0, *,
                        now: float | None = None, chats: ChatFilter | None = None) -> Stats:
    """Read the log and summarise it: everything, or only `chats`' requests (one server's
    channels, one group) for that server's or group's admins."""
    now = time.time() if now is None else now
    today_start = _day_start(now)
    first_day = today_start - timedelta(days=CHART_DAYS - 1)
    week_since = now - WEEK_DAYS * DAY_S
    rows = await request_log.rows_since(min(first_day.timestamp(), week_since), [
        "platform", "user_id", "status", "cache_hit", "queue_wait_s", "total_s", "created_at",
        "user_name", "worker", "batch_size", "times", "input_kind", "output_kind",
        "image_sha256"], chats=chats)
    hits, done = await request_log.cache_hit_counts(chats=chats)
    pruned_hits, pruned_done = (0, 0) if chats is not None \
        else await request_log.retention.cache_hit_counts()

    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    day_latency: dict[str, list[float]] = defaultdict(list)
    waits: list[float] = []
    totals: list[float] = []
    users: Counter[tuple[str, str]] = Counter()
    # (created_at, name) of each user's newest named row: people rename themselves.
    names: dict[tuple[str, str], tuple[float, str]] = {}
    worker_batches: dict[str, list[int]] = defaultdict(list)
    inputs: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    for day, platform, count in [] if chats is not None else \
            await request_log.retention.per_day(first_day.strftime("%Y-%m-%d")):
        per_day[day][platform] += count
    for (platform, user_id, status, cache_hit, wait, total, created, user_name, worker,
         batch_size, times, input_kind, output_kind, image_sha256) in rows:
        day = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d")
        per_day[day][platform] += times or 1
        computed = status == RequestStatus.DONE and not cache_hit
        if computed and total is not None:
            day_latency[day].append(total)
        if created > week_since:
            if status != RequestStatus.REJECTED:
                users[(platform, user_id)] += 1
                # Rows from before moving pictures hold a picture's hash and no kind.
                kind = input_kind or ("photo" if image_sha256 else None)
                if kind:
                    inputs[kind] += 1
            if status == "done":
                answers[output_kind or "audio"] += 1
            if user_name and created >= names.get((platform, user_id), (-math.inf, ""))[0]:
                names[(platform, user_id)] = (created, user_name)
            if computed and worker:
                worker_batches[worker].append(batch_size or 1)
            if computed:
                if wait is not None:
                    waits.append(wait)
                if total is not None:
                    totals.append(total)
    days = []
    for i in range(CHART_DAYS):
        day = (first_day + timedelta(days=i)).strftime("%Y-%m-%d")
        lat = day_latency.get(day, [])
        days.append(DayStats(day, dict(per_day.get(day, {})), percentile(lat, 50),
                             percentile(lat, 95)))
    return Stats(
        generated_at=now,
        today=await _totals_since(request_log, today_start.timestamp(), chats),
        week=await _totals_since(request_log, week_since, chats),
        all_time=await _totals_since(request_log, None, chats),
        cache_hits=hits + pruned_hits, done=done + pruned_done,
        queue_wait_p50_s=percentile(waits, 50), queue_wait_p95_s=percentile(waits, 95),
        total_p50_s=percentile(totals, 50), total_p95_s=percentile(totals, 95),
        queue_length=queue_length,
        top_users=[TopUser(p, u, n, names[(p, u)][1] if (p, u) in names else None)
                   for (p, u), n in users.most_common(TOP_USERS)],
        days=days,
        # The workers are the operator's business, not a server's.
        workers=[] if chats is not None else sorted(
            (WorkerStats(name, len(sizes), sum(sizes) / len(sizes))
             for name, sizes in worker_batches.items()), key=lambda w: (-w.jobs, w.name)),
        scoped=chats is not None,
        inputs=dict(inputs), answers=dict(answers))
