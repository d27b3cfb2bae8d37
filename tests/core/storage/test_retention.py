"""Retention (`[storage] keep_days`): rows and clips older than that go, in small batches,
on both databases; what they counted stays as daily totals, so the statistics an admin sees
are the same before and after; nothing still owed an answer is pruned."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.cli import main
from core.config import MIN_KEEP_DAYS, parse_config
from core.errors import ConfigError
from core.jobs.cache import ClipCache
from core.jobs.pruning import Pruned, Pruner
from core.records import RequestRecord
from core.stats.collect import CHART_DAYS, WEEK_DAYS, collect_stats
from core.stats.render import render_stats_text
from core.storage.request_log import RequestLog
from core.storage.retention import Retention
from core.storage.tables import daily_totals

pytestmark = pytest.mark.timeout(180)

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC).timestamp()
DAY = 86_400.0
KEEP_DAYS = 30


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


async def add_clip(cache: ClipCache, clock: Clock, clip_id: str, age: float) -> dict[str, str]:
    """A clip (files on disk, bytes in the database) last used `age` seconds before NOW."""
    clock.now = NOW - age
    files = {}
    for fmt in ("ogg", "mp3"):
        path = cache.root / f"{clip_id}.{fmt}"
        path.write_bytes(f"{clip_id} {fmt} ".encode() * 50)
        files[fmt] = path
    await cache.add(clip_id=clip_id, key=f"key-{clip_id}", caption="rain", prompt="rain",
                    seed=1, duration_s=1.0, files=files)
    clock.now = NOW
    return {fmt: path.name for fmt, path in files.items()}


def row(request_id: str, age: float, **values: object) -> RequestRecord:
    defaults: dict[str, object] = {"platform": "telegram", "user_id": "u1", "chat_id": "c",
                                   "source_kind": "photo", "status": "done"}
    defaults.update(values)
    return RequestRecord(id=request_id, created_at=NOW - age, **defaults)  # type: ignore[arg-type]


async def fill(request_log: RequestLog, cache: ClipCache, clock: Clock) -> None:
    """40 days of traffic on three platforms, with every kind of outcome."""
    for day in range(40):
        age = day * DAY + 3_600.0
        files = await add_clip(cache, clock, f"clip{day}", age)
        platform = ("telegram", "discord", "web")[day % 3]
        await request_log.insert(row(f"d{day}", age, platform=platform, files=files,
                                     total_s=4.0 + day, queue_wait_s=1.0, user_name=f"U{day}",
                                     worker="gpu-a", batch_size=2))
        await request_log.insert(row(f"h{day}", age - 60, platform=platform, files=files,
                                     cache_hit=True, total_s=0.01, batch_size=0))
        await request_log.insert(row(f"f{day}", age - 120, status="failed", reason="failed"))
        await request_log.insert(row(f"i{day}", age - 130, status="interrupted",
                                     platform="discord"))
        for n in range(1 + day % 4):  # refusals folded into one row a minute
            await request_log.record_refusal(row(f"x{day}-{n}", age - 180 - n, platform="web",
                                                 user_id="ip:1.2.3.4", status="rejected",
                                                 reason="address_busy"))
    # Old, but still somebody's due: never pruned, nor the clip they will send.
    owed_files = await add_clip(cache, clock, "owed-clip", 35 * DAY)
    await request_log.insert(row("owed", 35 * DAY, delivery="owed", files=owed_files))
    await request_log.insert(row("sending", 36 * DAY, delivery="sending", files=owed_files))
    await request_log.insert(row("queued", 37 * DAY, status="queued"))
    await request_log.insert(row("received", 38 * DAY, status="received"))
    await request_log.insert(row("sent", 39 * DAY, delivery="sent"))  # answered: goes
    # An old shared result and a picture left behind go with their rows.
    await request_log.share_links.create("d35", b"jpeg")
    await request_log.blobs.put_picture("d36", b"png")


async def test_old_rows_and_clips_go_and_the_stats_stay_the_same(
        log_url: str, tmp_path: Path) -> None:
    request_log = await RequestLog.open(log_url)
    clock = Clock()
    cache = ClipCache(request_log, tmp_path / "cache", 10**9, clock=clock, shared=True)
    await cache.start()
    try:
        await fill(request_log, cache, clock)
        before = await collect_stats(request_log, queue_length=2, now=NOW)
        assert before.all_time.by_status["rejected"] == sum(1 + d % 4 for d in range(40))
        rows_before = len(await request_log.rows_since(0))

        pruner = Pruner(request_log, cache.root, KEEP_DAYS, clock=clock, batch=7, pause_s=0)
        pruned = await pruner.prune()

        after = await collect_stats(request_log, queue_length=2, now=NOW)
        assert after == before  # every number, every day of the chart, every top user
        assert render_stats_text(after) == render_stats_text(before)
        cutoff = NOW - KEEP_DAYS * DAY
        left = await request_log.rows_since(0)
        assert {r.id for r in left if r.created_at < cutoff} == {"owed", "sending", "queued",
                                                                 "received"}
        assert pruned.rows == rows_before - len(left) == 51
        # The clips not used for 30 days went: index, bytes in the database, files on disk.
        old_clips = {f"clip{d}" for d in range(40) if d * DAY + 3_600.0 > KEEP_DAYS * DAY}
        assert pruned.clips == len(old_clips) and pruned.files == 2 * len(old_clips)
        assert await request_log.retention.known_clips(sorted(old_clips)) == set()
        for clip in old_clips:
            assert await request_log.clips.get_bytes(clip) == {}
            assert not (cache.root / f"{clip}.ogg").exists()
        kept = await request_log.retention.known_clips(["owed-clip", "clip0", "clip29"])
        assert kept == {"owed-clip", "clip0", "clip29"}
        assert (cache.root / "owed-clip.ogg").exists()
        assert await cache.local_files({"ogg": "owed-clip.ogg"}) is not None
        assert not await request_log.share_links.is_shared("d35")
        assert await request_log.blobs.get_picture("d36") is None
        async with request_log.db.connect() as conn:
            days = (await conn.execute(select(func.count(func.distinct(daily_totals.c.day)))
                                       )).scalar()
        assert days == 40 - KEEP_DAYS  # the days the pruned rows fell on

        # Again: nothing more to do, and still the same numbers.
        assert await pruner.prune() == Pruned()
        assert await collect_stats(request_log, queue_length=2, now=NOW) == before
    finally:
        await request_log.close()


@pytest.mark.parametrize("locked", [True, False])
async def test_two_processes_pruning_one_postgresql_count_each_row_once(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        locked: bool) -> None:
    """With the advisory lock one prunes while the other steps aside; without it (`locked`
    False) both delete at once — a row is still counted only by the one that deleted it."""
    if not locked:
        @contextlib.asynccontextmanager
        async def always(self: Retention) -> AsyncIterator[bool]:
            yield True

        monkeypatch.setattr(Retention, "exclusive", always)
    logs = [await RequestLog.open(postgres_url) for _ in range(2)]
    clock = Clock()
    cache = ClipCache(logs[0], tmp_path / "cache", 10**9, clock=clock, shared=True)
    await cache.start()
    try:
        await fill(logs[0], cache, clock)
        before = await collect_stats(logs[0], now=NOW)
        pruners = [Pruner(log, tmp_path / f"cache{n}", KEEP_DAYS, clock=clock, batch=3,
                          pause_s=0) for n, log in enumerate(logs)]
        results = await asyncio.gather(*(p.prune() for p in pruners))
        assert sum(r.rows for r in results) == 51
        assert sum(r.clips for r in results) == 10
        assert [await p.prune() for p in pruners] == [Pruned(), Pruned()]
        assert await collect_stats(logs[1], now=NOW) == before
    finally:
        for log in logs:
            await log.close()


async def test_pruning_runs_in_the_background_and_not_with_keep_days_0(tmp_path: Path) -> None:
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    try:
        await request_log.insert(row("old", 40 * DAY))
        await request_log.insert(row("new", DAY))
        forever = Pruner(request_log, tmp_path / "cache", 0, clock=Clock(), first_after_s=0)
        forever.start()
        await asyncio.sleep(0.2)  # it would have pruned by now: it never started
        await forever.stop()
        assert {r.id for r in await request_log.rows_since(0)} == {"old", "new"}
        pruner = Pruner(request_log, tmp_path / "cache", KEEP_DAYS, clock=Clock(),
                        first_after_s=0)
        pruner.start()
        async with asyncio.timeout(30):
            while len(await request_log.rows_since(0)) > 1:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await pruner.stop()
        assert [r.id for r in await request_log.rows_since(0)] == ["new"]
    finally:
        await request_log.close()


def test_keep_days_is_0_or_at_least_the_days_the_stats_read_row_by_row() -> None:
    assert MIN_KEEP_DAYS >= CHART_DAYS >= WEEK_DAYS
    assert parse_config({}).storage.keep_days == 30
    assert parse_config({"storage": {"keep_days": 0}}).storage.keep_days == 0
    assert parse_config({"storage": {"keep_days": MIN_KEEP_DAYS}}).storage.keep_days == 14
    with pytest.raises(ConfigError, match=r"\[storage\] keep_days: 7 is too short; use 0"):
        parse_config({"storage": {"keep_days": 7}})


async def test_sonify_stats_keeps_the_history_of_pruned_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'sonify.db'}")
    now = time.time()
    try:
        for n in range(3):
            await request_log.insert(RequestRecord(
                id=f"old{n}", platform="discord", user_id="1", chat_id="1", source_kind="photo",
                status="done", created_at=now - 90 * DAY))
        await request_log.insert(RequestRecord(
            id="new", platform="telegram", user_id="2", chat_id="2", source_kind="photo",
            status="done", created_at=now - 60))
        pruner = Pruner(request_log, tmp_path / "data" / "cache", KEEP_DAYS)
        assert (await pruner.prune()).rows == 3
    finally:
        await request_log.close()
    code = await asyncio.to_thread(main, ["stats", "--config", str(config_file)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "All time: 4 requests — discord 3, telegram 1 · done 4" in out.out


def test_the_growth_bench_runs_and_a_flood_adds_one_row() -> None:
    """`bench/log_growth_bench.py` (the README's growth figures) runs as documented."""
    bench = Path(__file__).resolve().parents[3] / "bench" / "log_growth_bench.py"
    done = subprocess.run([sys.executable, str(bench)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    flood = next(line for line in lines if line.startswith("flood:"))
    assert " 1 rows " in flood
    assert any(line.startswith("1,000 clients refused") and " 1000 rows " in line
               for line in lines)
    assert "keep_days = 30 pruned 2,001 of 2,001 rows" in done.stdout


async def test_pruning_takes_turns_with_new_requests(tmp_path: Path) -> None:
    """Small transactions with a pause between them: requests are recorded while a long
    pruning goes on, not after it."""
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    try:
        for n in range(60):
            await request_log.insert(row(f"old{n}", 40 * DAY - n))
        events: list[str] = []
        prune_batch = request_log.retention.prune_requests

        async def batch(before: float, limit: int) -> int:
            pruned = await prune_batch(before, limit)
            events.append(f"batch of {pruned}")
            return pruned

        request_log.retention.prune_requests = batch  # type: ignore[method-assign]

        async def requests() -> None:
            for n in range(10):
                await request_log.insert(row(f"new{n}", 60.0 - n))
                events.append("request recorded")

        pruner = Pruner(request_log, tmp_path / "cache", KEEP_DAYS, clock=Clock(), batch=5,
                        pause_s=0.01)
        pruned, _ = await asyncio.gather(pruner.prune(), requests())
        assert pruned.rows == 60
        batches = [n for n, e in enumerate(events) if e.startswith("batch of 5")]
        recorded = [n for n, e in enumerate(events) if e == "request recorded"]
        assert len(batches) == 12 and len(recorded) == 10
        assert recorded[0] < batches[-1]  # recorded in between, not held until the end
        assert {r.id for r in await request_log.rows_since(0)} == {f"new{n}" for n in range(10)}
    finally:
        await request_log.close()
