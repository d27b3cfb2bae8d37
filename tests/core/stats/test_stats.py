"""Statistics over a hand-made request log: totals per period, hit rate, percentiles, chart."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from core.records import RequestRecord
from core.stats.collect import TopUser, WorkerStats, collect_stats, percentile
from core.stats.render import render_stats_chart, render_stats_text
from core.storage.request_log import RequestLog

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0
DAY = 86400.0


def rec(n: int, age: float, *, platform: str = "telegram", user: str = "u1",
        status: str = "done", cache_hit: bool = False, wait: float | None = None,
        total: float | None = None, name: str | None = None) -> RequestRecord:
    return RequestRecord(id=f"r{n}", platform=platform, user_id=user, chat_id="c",
                         source_kind="photo", status=status, created_at=NOW - age,
                         cache_hit=cache_hit, queue_wait_s=wait, total_s=total, user_name=name)


@pytest.fixture
async def request_log(tmp_path: Path):
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'stats.db'}")
    records = [
        # today (15:00 UTC now): 4 requests
        rec(1, 1 * HOUR, wait=1.0, total=5.0, name="Alice\nB."),  # renamed since r5
        rec(2, 2 * HOUR, platform="discord", user="d7", wait=3.0, total=9.0),
        rec(3, 3 * HOUR, cache_hit=True, wait=0.0, total=0.01),  # no name this time
        rec(4, 4 * HOUR, platform="web", user="w", status="rejected"),
        # earlier this week: 3 requests
        rec(5, 2 * DAY, wait=2.0, total=7.0, name="alice_old"),
        rec(6, 3 * DAY, platform="discord", user="d7", status="failed"),
        rec(7, 5 * DAY, platform="discord", user="d8", wait=4.0, total=11.0),
        # older than a week (still in the 14-day chart) and much older
        rec(8, 10 * DAY, wait=100.0, total=200.0),
        rec(9, 400 * DAY, status="interrupted"),
    ]
    for r in records:
        await request_log.insert(r)
    yield request_log
    await request_log.close()


async def test_totals_hit_rate_percentiles_and_top_users(request_log: RequestLog) -> None:
    stats = await collect_stats(request_log, queue_length=3, now=NOW)
    assert stats.today.total == 4
    assert stats.today.by_platform == {"telegram": 2, "discord": 1, "web": 1}
    assert stats.today.by_status == {"done": 3, "rejected": 1}
    assert stats.week.total == 7 and stats.week.by_status["failed"] == 1
    assert stats.all_time.total == 9 and stats.all_time.by_status["interrupted"] == 1
    assert (stats.cache_hits, stats.done) == (1, 6)
    assert stats.cache_hit_rate == pytest.approx(1 / 6)
    # Computed jobs of the last 7 days only: waits 1, 3, 2, 4 and totals 5, 9, 7, 11.
    assert stats.queue_wait_p50_s == pytest.approx(2.5)
    assert stats.total_p50_s == pytest.approx(8.0)
    assert stats.total_p95_s == pytest.approx(10.7)
    assert stats.queue_length == 3
    # The newest name a user gave; none where the platform gave none.
    assert stats.top_users[0] == TopUser("telegram", "u1", 3, "Alice\nB.")
    assert stats.top_users[1] == TopUser("discord", "d7", 2, None)
    assert all(u.platform != "web" for u in stats.top_users)  # refusals are not usage
    assert len(stats.days) == 14 and stats.days[-1].day == "2026-11-20"
    assert stats.days[-1].by_platform == {"telegram": 2, "discord": 1, "web": 1}
    assert stats.days[-11].by_platform == {"telegram": 1}
    assert stats.days[-11].total_p50_s == pytest.approx(200.0)


async def test_text_and_chart_render(request_log: RequestLog) -> None:
    stats = await collect_stats(request_log, queue_length=3, now=NOW)
    text = render_stats_text(stats)
    assert "Today: 4 requests — telegram 2" in text
    assert "All time: 9 requests" in text
    assert "Cache hits (all time): 17% (1 of 6 done)" in text
    assert "total p50 8.0 s, p95 10.7 s" in text
    assert "Queue: 3 waiting" in text
    # A readable name where the platform gave one (on one line), the id otherwise.
    assert "Top users (7 days): Alice B. — telegram:u1 (3), discord:d7 (2)" in text
    assert "Usuarios principales (7 días): Alice B. — telegram:u1 (3)" in render_stats_text(
        stats, "es")
    assert len(text.splitlines()) <= 10
    assert "Workers" not in text  # one process renders (the local backend): no such line
    png = render_stats_chart(stats)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (800, 550)
    # Not a blank canvas: the bars and lines put many colours on it.
    assert len(set(image.convert("RGB").getdata())) > 20


async def test_empty_log(tmp_path: Path) -> None:
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        stats = await collect_stats(request_log, now=NOW)
    finally:
        await request_log.close()
    assert stats.all_time.total == 0 and stats.cache_hit_rate is None
    assert stats.total_p95_s is None and stats.top_users == []
    text = render_stats_text(stats)
    assert "Today: 0 requests" in text and "Cache hits: –" in text
    assert render_stats_chart(stats).startswith(b"\x89PNG")


async def test_each_worker_with_its_jobs_and_mean_batch(tmp_path: Path) -> None:
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        for n, (worker, batch, hit) in enumerate([("gpu-a", 4, False), ("gpu-a", 2, False),
                                                  ("gpu-b", 3, False), ("gpu-b", 3, True)]):
            await request_log.insert(replace(rec(n, HOUR, total=1.0, cache_hit=hit),
                                             worker=worker, batch_size=batch))
        stats = await collect_stats(request_log, now=NOW)
    finally:
        await request_log.close()
    # Cache hits were computed by nobody: gpu-b's second row does not count.
    assert stats.workers == [WorkerStats("gpu-a", 2, 3.0), WorkerStats("gpu-b", 1, 3.0)]
    assert render_stats_text(stats).splitlines()[-1] == (
        "Workers (7 days, computed jobs): gpu-a 2 (mean batch 3.0), gpu-b 1 (mean batch 3.0)")
    assert render_stats_text(stats, "es").splitlines()[-1].startswith(
        "Workers (7 días, trabajos calculados): gpu-a 2 (lote medio 3.0)")


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0


async def test_a_long_name_is_cut_to_fit_the_line(tmp_path: Path) -> None:
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'names.db'}")
    try:
        await request_log.insert(rec(1, HOUR, platform="discord", user="42", name="x" * 64))
        stats = await collect_stats(request_log, now=NOW)
    finally:
        await request_log.close()
    line = render_stats_text(stats).splitlines()[-1]
    assert line == f"Top users (7 days): {'x' * 31}… — discord:42 (1)"


async def test_inputs_and_answers_by_kind_in_both_languages(tmp_path: Path) -> None:
    """What came in (photo, animation, video) and what went out; old rows read as photos."""
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'kinds.db'}")
    rows = [rec(1, HOUR), rec(2, HOUR), rec(3, HOUR), rec(4, HOUR), rec(5, HOUR, status="rejected")]
    rows[0].image_sha256 = "a" * 64  # a row from before moving pictures: no kinds
    rows[1].input_kind, rows[1].output_kind = "animation", "video"
    rows[2].input_kind, rows[2].output_kind = "video", "audio_only"
    rows[3].input_kind, rows[3].output_kind = "photo", "audio"
    try:
        for row in rows:
            await request_log.insert(row)
        stats = await collect_stats(request_log, now=NOW)
    finally:
        await request_log.close()
    en = render_stats_text(stats).splitlines()
    assert "Inputs (7 days): photos 2 · animations 1 · videos 1" in en
    assert "Answers (7 days): audio 2 · video 1 · sound only (too large) 1" in en
    es = render_stats_text(stats, "es").splitlines()
    assert "Entradas (7 días): fotos 2 · animaciones 1 · vídeos 1" in es
    assert "Respuestas (7 días): audio 2 · vídeo 1 · solo sonido (demasiado grande) 1" in es
