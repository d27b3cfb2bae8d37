"""How much the request log grows per 1,000 requests, and what retention leaves of it.

    .venv/bin/python bench/log_growth_bench.py
    .venv/bin/python bench/log_growth_bench.py --database-url postgresql+asyncpg://…/db

Four kinds of traffic, 1,000 requests each, through the code the service runs (the
engine's refusals, the rows of finished jobs as the engine writes them):

- a flood: one client refused 1,000 times within a minute (the same reason);
- 1,000 different clients refused once each;
- 1,000 answered requests (a picture captioned and rendered: caption, prompt, options,
  timings, file names, a chat's reply context);
- the clip files of a computed job (one 5 s clip: OGG/Opus + MP3, what the clip cache keeps).

Printed: rows added and database bytes added per 1,000 (SQLite: the file's pages after a
checkpoint; PostgreSQL: the tables' and indexes' total size), then the same log after
`[storage] keep_days` pruned the answered rows into daily totals.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import parse_config
from core.errors import RateLimited
from core.jobs.cache import ClipCache
from core.jobs.local import local_engine
from core.jobs.pruning import DAY_S, Pruner
from core.jobs.request import JobRequest
from core.jobs.rows import record_for
from core.options import GenerationOptions
from core.storage.request_log import RequestLog
from core.storage.tables import daily_totals, requests

N = 1_000


async def database_bytes(request_log: RequestLog) -> int:
    async with request_log.db.connect() as conn:
        if request_log.is_sqlite:
            await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            pages = (await conn.execute(text("PRAGMA page_count"))).scalar() or 0
            size = (await conn.execute(text("PRAGMA page_size"))).scalar() or 0
            return int(pages) * int(size)
        await conn.execute(text("ANALYZE"))
        total = (await conn.execute(text(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"))).scalar()
        return int(total or 0)


async def rows(request_log: RequestLog) -> int:
    async with request_log.db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(requests))).scalar()
                   or 0)


async def measured(request_log: RequestLog, label: str, work: object) -> None:
    rows_before, bytes_before = await rows(request_log), await database_bytes(request_log)
    await work  # type: ignore[misc]
    rows_after, bytes_after = await rows(request_log), await database_bytes(request_log)
    print(f"{label:<48} {rows_after - rows_before:>6} rows  "
          f"{(bytes_after - bytes_before) / 1024:>8.1f} KiB")


def answered(n: int, now: float) -> tuple[JobRequest, dict[str, object]]:
    """A Telegram photo request and the columns the engine sets when its clip is sent."""
    request = JobRequest(
        platform="telegram", user_id=str(100_000 + n % 50), chat_id=str(-1_000_000 - n % 7),
        source_kind="photo", options=GenerationOptions(), answer_owed=True,
        reply_context={"chat_id": -1_000_000 - n % 7, "message_id": 4_000 + n,
                       "status_message_id": 9_000 + n, "thread_id": None},
        dedupe_key=f"telegram:update:{500_000 + n}", user_name=f"User {n % 50}",
        source={"kind": "telegram_file", "file_id": f"AgACAgQAAxkBAAI{n:012d}AAHrZ2x0bWdhcGhvdG8",
                "file_size": 123_456, "mime_type": "image/jpeg"})
    caption = "a brown dog running across a grassy field next to a red ball"
    done = {"status": "done", "caption": caption, "image_sha256": f"{n:064x}",
            "prompt": f"The sound of {caption}, as heard in real life", "seed": 123_456 + n,
            "cache_key": f"{n:064x}"[::-1], "queue_wait_s": 0.8, "caption_s": 1.2,
            "sound_s": 3.4, "encode_s": 0.1, "total_s": 5.5, "duration_s": 5.0,
            "batch_size": 4, "started_at": now + 1, "finished_at": now + 6,
            "files": {"ogg": f"clip{n:08d}.ogg", "mp3": f"clip{n:08d}.mp3"},
            "delivery": "sent", "worker": None}
    return request, done


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite+aiosqlite:///{tmp}/sonify.db"
        config = parse_config({"storage": {"data_dir": tmp, "database_url": database_url}},
                              source="log growth bench", environ={})
        request_log = await RequestLog.open(database_url)
        now = time.time() - 40 * DAY_S  # old enough for retention to prune afterwards
        clock = [now]
        # Refusals need no models (nothing is rendered): the factory is never called.
        engine = local_engine(config, request_log, pipeline_factory=lambda: None,  # type: ignore[arg-type,return-value]
                                clock=lambda: clock[0])

        async def flood() -> None:
            for _ in range(N):
                clock[0] += 0.05  # 1,000 in 50 s
                await engine.reject(platform="web", user_id="ip:198.51.100.7",
                                    chat_id="ip:198.51.100.7", source_kind="upload",
                                    error=RateLimited("busy", code="address_busy"))

        async def many_clients() -> None:
            for n in range(N):
                clock[0] += 0.05
                await engine.reject(platform="web", user_id=f"ip:198.51.{n // 256}.{n % 256}",
                                    chat_id=f"ip:198.51.{n // 256}.{n % 256}",
                                    source_kind="upload",
                                    error=RateLimited("busy", code="address_busy"))

        async def answers() -> None:
            for n in range(N):
                request, done = answered(n, now + n * 10)
                record = record_for(request, f"req{n:09d}", status="queued",
                                    created_at=now + n * 10, seed=None)
                await request_log.insert(record)
                await request_log.update(record.id, **done)

        print(f"database: {'SQLite' if request_log.is_sqlite else 'PostgreSQL'}; "
              f"per {N:,} requests")
        await measured(request_log, "flood: 1 client refused 1,000 times in 50 s", flood())
        await measured(request_log, "1,000 clients refused once each", many_clients())
        await measured(request_log, "1,000 answered requests (rows only)", answers())

        cache = ClipCache(request_log, Path(tmp) / "cache", 10**9)
        rate = 16_000
        noise = np.random.default_rng(0).standard_normal(rate * 5).astype(np.float32) * 0.1
        files, _ = cache.write("clip-size", noise, rate)
        clip_bytes = sum(p.stat().st_size for p in files.values())
        print(f"{'clip files of one computed 5 s job (ogg + mp3)':<48} {'':>6}       "
              f"{clip_bytes / 1024:>8.1f} KiB  (x1,000 computed: "
              f"{clip_bytes * N / 1024 / 1024:.1f} MiB)")

        before = await rows(request_log)
        size_before = await database_bytes(request_log)
        pruner = Pruner(request_log, cache.root, 30, pause_s=0)
        started = time.perf_counter()
        pruned = await pruner.prune()
        seconds = time.perf_counter() - started
        async with request_log.db.connect() as conn:
            totals = int((await conn.execute(select(func.count()).select_from(daily_totals))
                          ).scalar() or 0)
        print(f"keep_days = 30 pruned {pruned.rows:,} of {before:,} rows in {seconds:.2f} s "
              f"({pruner.batch} per transaction); {totals} daily-total rows remain; database "
              f"{size_before / 1024:.0f} KiB -> {await database_bytes(request_log) / 1024:.0f} "
              "KiB (freed pages are reused)")
        await request_log.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="",
                        help="a fresh PostgreSQL database (default: a SQLite file)")
    asyncio.run(main(parser.parse_args()))
