"""Statistics as an admin reads them: a few lines of text and a PNG chart, in their language."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime

from core.i18n import t
from core.stats.collect import Stats, TopUser, Totals
from core.user_text import escape_controls

NAME_CHARS = 32  # a top user's name is cut to this: a few of them share one line


def _counts(counts: dict[str, int], lang: str, *, statuses: bool = False) -> str:
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{t('stats.status.' + k, lang) if statuses else k} {v}"
                     for k, v in ordered)


def _totals(label_key: str, totals: Totals, lang: str) -> str:
    label = t(label_key, lang)
    if not totals.total:
        return t("stats.totals_none", lang, label=label)
    return t("stats.totals", lang, label=label, total=totals.total,
             platforms=_counts(totals.by_platform, lang),
             statuses=_counts(totals.by_status, lang, statuses=True))


def _seconds(value: float | None, lang: str) -> str:
    return t("stats.none", lang) if value is None else t("seconds", lang, n=f"{value:.1f}")


def _top_user(user: TopUser, lang: str) -> str:
    """`Alice — telegram:123 (4)`, or `telegram:123 (4)` where the platform gave no name."""
    # Names are chosen by strangers: one line, bounded length, whatever they typed — with its
    # control characters escaped, as `sonify stats` prints this to a terminal.
    name = escape_controls(" ".join((user.name or "").split()))
    if len(name) > NAME_CHARS:
        name = name[:NAME_CHARS - 1] + "…"
    key = "stats.top_user_named" if name else "stats.top_user"
    return t(key, lang, name=name, platform=user.platform, user_id=user.user_id, count=user.count)


def render_stats_text(stats: Stats, lang: str = "en", place: str | None = None) -> str:
    """A few short lines for a chat reply or a terminal; `place` names the server or group
    the figures are limited to."""
    rate = stats.cache_hit_rate
    cache = (t("stats.cache_none", lang) if rate is None else
             t("stats.cache", lang, rate=f"{rate:.0%}", hits=stats.cache_hits, done=stats.done))
    top = ", ".join(_top_user(user, lang) for user in stats.top_users) or t("stats.none", lang)
    when = f"{datetime.fromtimestamp(stats.generated_at, UTC):%Y-%m-%d %H:%M}"
    return "\n".join([
        t("stats.title", lang, when=when) + (f" — {escape_controls(place)}" if place else ""),
        _totals("stats.today", stats.today, lang),
        _totals("stats.week", stats.week, lang),
        _totals("stats.all_kept" if stats.scoped else "stats.all_time", stats.all_time, lang),
        cache,
        t("stats.latency", lang, wait_p50=_seconds(stats.queue_wait_p50_s, lang),
          wait_p95=_seconds(stats.queue_wait_p95_s, lang),
          total_p50=_seconds(stats.total_p50_s, lang),
          total_p95=_seconds(stats.total_p95_s, lang)),
        t("stats.queue", lang, count=stats.queue_length),
        t("stats.inputs", lang, photo=stats.inputs.get("photo", 0),
          animation=stats.inputs.get("animation", 0), video=stats.inputs.get("video", 0)),
        t("stats.answers", lang, audio=stats.answers.get("audio", 0),
          video=stats.answers.get("video", 0), audio_only=stats.answers.get("audio_only", 0)),
        t("stats.top_users", lang, users=top),
        *([t("stats.workers", lang, workers=", ".join(
            t("stats.worker", lang, name=w.name, jobs=w.jobs, batch=f"{w.mean_batch:.1f}")
            for w in stats.workers))] if stats.workers else []),
    ])


def render_stats_chart(stats: Stats, lang: str = "en") -> bytes:
    """A PNG: requests per day by platform (stacked bars) and latency percentiles per day."""
    # matplotlib is heavy (and only admins ask for charts): imported when one is drawn.
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
    top.set_ylabel(t("stats.chart.requests", lang))
    top.set_title(t("stats.chart.requests_title", lang, days=len(xs)))
    top.yaxis.set_major_locator(MaxNLocator(integer=True))  # no "0.4 requests"
    # Headroom so the one-row legend never covers a bar.
    top.set_ylim(0, max(max(base, default=0), 1) * 1.3)
    if platforms:
        top.legend(loc="upper left", fontsize="small", ncols=len(platforms), frameon=False)
    else:
        top.text(0.5, 0.5, t("stats.chart.no_requests", lang), transform=top.transAxes,
                 ha="center", va="center", color="grey")
    # p95 first and bigger, so a day where both are equal still shows both markers.
    lines = (("total_p95_s", "p95", "^", "-", 8), ("total_p50_s", "p50", "o", "--", 5))
    highest = 0.0
    for attr, name, marker, style, size in lines:
        values = [getattr(d, attr) for d in stats.days]
        highest = max([highest, *(v for v in values if v is not None)])
        bottom.plot(xs, [math.nan if v is None else v for v in values], marker=marker,
                    markersize=size, linestyle=style, label=name)
    bottom.set_ylabel(t("stats.chart.seconds", lang))
    bottom.set_title(t("stats.chart.latency_title", lang))
    # From zero: a wobble of a few tenths of a second must not look like a spike.
    bottom.set_ylim(0, highest * 1.3 if highest > 0 else 1)
    if highest > 0:
        handles, names = bottom.get_legend_handles_labels()
        bottom.legend(handles[::-1], names[::-1], loc="upper left", fontsize="small", ncols=2,
                      frameon=False)
    else:
        bottom.set_yticks([])
        bottom.text(0.5, 0.5, t("stats.chart.no_jobs", lang), transform=bottom.transAxes,
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
