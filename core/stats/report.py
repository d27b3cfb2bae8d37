"""Usage statistics from the request log: totals, cache hit rate, latency, top users, a chart.

Days are UTC days. Latency percentiles cover the last 7 days of jobs the models
actually computed (cache hits answer in milliseconds and would hide the real wait);
the cache hit rate covers every finished job in the log.
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from core.storage.request_log import RequestLog

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
    top_users: list[tuple[str, str, int]]  # (platform, user id, requests in 7 days)
    days: list[DayStats]  # oldest first, CHART_DAYS of them

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


async def collect_stats(request_log: RequestLog, queue_length: int = 0, *,
                        now: float | None = None) -> Stats:
    """Read the log and summarise it."""
    now = time.time() if now is None else now
    today_start = _day_start(now)
    first_day = today_start - timedelta(days=CHART_DAYS - 1)
    week_since = now - WEEK_DAYS * DAY_S
    rows = await request_log.rows_since(min(first_day.timestamp(), week_since), [
        "platform", "user_id", "status", "cache_hit", "queue_wait_s", "total_s", "created_at"])
    hits, done = await request_log.cache_hit_counts()

    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    day_latency: dict[str, list[float]] = defaultdict(list)
    waits: list[float] = []
    totals: list[float] = []
    users: Counter[tuple[str, str]] = Counter()
    for platform, user_id, status, cache_hit, wait, total, created in rows:
        day = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d")
        per_day[day][platform] += 1
        computed = status == "done" and not cache_hit
        if computed and total is not None:
            day_latency[day].append(total)
        if created > week_since:
            if status != "rejected":
                users[(platform, user_id)] += 1
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
        today=_totals(await request_log.counts(today_start.timestamp())),
        week=_totals(await request_log.counts(week_since)),
        all_time=_totals(await request_log.counts()),
        cache_hits=hits, done=done,
        queue_wait_p50_s=percentile(waits, 50), queue_wait_p95_s=percentile(waits, 95),
        total_p50_s=percentile(totals, 50), total_p95_s=percentile(totals, 95),
        queue_length=queue_length,
        top_users=[(p, u, n) for (p, u), n in users.most_common(TOP_USERS)],
        days=days)


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _fmt_totals(label: str, totals: Totals) -> str:
    if not totals.total:
        return f"{label}: 0 requests"
    return (f"{label}: {totals.total} requests — {_fmt_counts(totals.by_platform)}"
            f" · {_fmt_counts(totals.by_status)}")


def _fmt_s(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


def render_stats_text(stats: Stats) -> str:
    """A few short lines for a chat reply."""
    rate = stats.cache_hit_rate
    hit_line = ("Cache hits: –" if rate is None else
                f"Cache hits (all time): {rate:.0%} ({stats.cache_hits} of {stats.done} done)")
    top = ", ".join(f"{p}:{u} ({n})" for p, u, n in stats.top_users) or "–"
    return "\n".join([
        f"Sonify stats — {datetime.fromtimestamp(stats.generated_at, UTC):%Y-%m-%d %H:%M} UTC",
        _fmt_totals("Today", stats.today),
        _fmt_totals("7 days", stats.week),
        _fmt_totals("All time", stats.all_time),
        hit_line,
        (f"Latency (7 days, computed): wait p50 {_fmt_s(stats.queue_wait_p50_s)}, "
         f"p95 {_fmt_s(stats.queue_wait_p95_s)} · total p50 {_fmt_s(stats.total_p50_s)}, "
         f"p95 {_fmt_s(stats.total_p95_s)}"),
        f"Queue: {stats.queue_length} waiting",
        f"Top users (7 days): {top}",
    ])


def render_stats_chart(stats: Stats) -> bytes:
    """A PNG: requests per day by platform (stacked bars) and latency percentiles per day."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    labels = [d.day[5:] for d in stats.days]
    xs = list(range(len(labels)))
    platforms = sorted({p for d in stats.days for p in d.by_platform})
    base = [0] * len(xs)
    for platform in platforms:
        counts = [d.by_platform.get(platform, 0) for d in stats.days]
        top.bar(xs, counts, bottom=base, label=platform)
        base = [b + c for b, c in zip(base, counts, strict=True)]
    top.set_ylabel("requests")
    top.set_title(f"Requests per day (UTC), last {len(xs)} days")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))  # no "0.4 requests"
    # Headroom so the one-row legend never covers a bar.
    top.set_ylim(0, max(max(base, default=0), 1) * 1.3)
    if platforms:
        top.legend(loc="upper left", fontsize="small", ncols=len(platforms), frameon=False)
    else:
        top.text(0.5, 0.5, "no requests in these days", transform=top.transAxes,
                 ha="center", va="center", color="grey")
    # p95 first and bigger, so a day where both are equal still shows both markers.
    lines = (("total_p95_s", "p95", "^", "-", 8), ("total_p50_s", "p50", "o", "--", 5))
    highest = 0.0
    for attr, name, marker, style, size in lines:
        values = [getattr(d, attr) for d in stats.days]
        highest = max([highest, *(v for v in values if v is not None)])
        bottom.plot(xs, [math.nan if v is None else v for v in values], marker=marker,
                    markersize=size, linestyle=style, label=name)
    bottom.set_ylabel("seconds")
    bottom.set_title("Request to reply, computed jobs (cache hits excluded)")
    # From zero: a wobble of a few tenths of a second must not look like a spike.
    bottom.set_ylim(0, highest * 1.3 if highest > 0 else 1)
    if highest > 0:
        handles, names = bottom.get_legend_handles_labels()
        bottom.legend(handles[::-1], names[::-1], loc="upper left", fontsize="small", ncols=2,
                      frameon=False)
    else:
        bottom.set_yticks([])
        bottom.text(0.5, 0.5, "no computed jobs in these days", transform=bottom.transAxes,
                    ha="center", va="center", color="grey")
    for ax in (top, bottom):
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_xlim(-0.6, len(xs) - 0.4)
    bottom.set_xticks(xs, labels, rotation=45, ha="right", rotation_mode="anchor",
                      fontsize="small")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
