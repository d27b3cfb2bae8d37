"""The request log (schema, migrations, queries) and the clip cache index on disk."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from sqlalchemy import insert, text
from sqlalchemy.exc import CompileError, IntegrityError

from core.errors import ConfigError
from core.jobs.cache import ClipCache, cache_key
from core.options import GenerationOptions
from core.records import Delivery, InputKind, OutputKind, RequestRecord, SoundFit, SourceKind
from core.storage.columns import row_values
from core.storage.migrate import _alembic as alembic_config
from core.storage.migrate import head_revision
from core.storage.request_log import RequestLog
from core.storage.tables import requests
from tests.core.storage.schema import schema_revision


def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'sonify.db'}"


def row(request_id: str, *, user: str = "u1", status: str = "queued", created: float = 1000.0,
        **extra: object) -> RequestRecord:
    return RequestRecord(id=request_id, platform="telegram", user_id=user, chat_id="c1",
                         source_kind="photo", status=status, created_at=created, **extra)  # type: ignore[arg-type]


async def test_fresh_database_is_created_at_the_head_revision_in_wal_mode(
        tmp_path: Path) -> None:
    request_log = await RequestLog.open(db_url(tmp_path))
    try:
        assert await schema_revision(request_log) == head_revision()
        async with request_log.db.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()
        assert mode == "wal"
        assert timeout >= 1000
        assert (tmp_path / "db" / "sonify.db").exists()
    finally:
        await request_log.close()


# The schema the hand-made migrations left behind (version 1), before Alembic.
LEGACY_SCHEMA = """
CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at FLOAT NOT NULL);
INSERT INTO schema_version VALUES (1, 0.0);
CREATE TABLE requests (id VARCHAR(24) PRIMARY KEY, platform VARCHAR(16) NOT NULL,
  user_id VARCHAR(64) NOT NULL, chat_id VARCHAR(64) NOT NULL, source_kind VARCHAR(16) NOT NULL,
  is_admin BOOLEAN NOT NULL, image_sha256 VARCHAR(64), caption TEXT, prompt TEXT, options JSON,
  seed INTEGER, lang VARCHAR(8) NOT NULL, reply_context JSON, cache_key VARCHAR(64),
  status VARCHAR(16) NOT NULL, reason VARCHAR(32), queue_wait_s FLOAT, caption_s FLOAT,
  sound_s FLOAT, encode_s FLOAT, total_s FLOAT, duration_s FLOAT, cache_hit BOOLEAN NOT NULL,
  batch_size INTEGER, files JSON, created_at FLOAT NOT NULL, started_at FLOAT,
  finished_at FLOAT);
CREATE TABLE clips (clip_id VARCHAR(24) PRIMARY KEY, "key" VARCHAR(64), caption TEXT NOT NULL,
  prompt TEXT NOT NULL, seed INTEGER NOT NULL, duration_s FLOAT NOT NULL, files JSON NOT NULL,
  size_bytes INTEGER NOT NULL, created_at FLOAT NOT NULL, last_used_at FLOAT NOT NULL);
INSERT INTO requests (id, platform, user_id, chat_id, source_kind, is_admin, lang, status,
  cache_hit, created_at) VALUES ('keep-me', 'telegram', 'u1', 'c1', 'photo', 0, 'en', 'done', 0,
  1000.0);
"""


async def test_a_database_from_before_alembic_is_upgraded_once_and_keeps_its_rows(
        tmp_path: Path) -> None:
    path = tmp_path / "db" / "sonify.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.executescript(LEGACY_SCHEMA)
    for _ in range(2):  # the second open finds nothing to do (a re-run would fail: duplicates)
        request_log = await RequestLog.open(db_url(tmp_path))
        try:
            assert await schema_revision(request_log) == head_revision()
            kept = await request_log.get("keep-me")
            assert kept is not None and (kept.status, kept.delivery, kept.attempts) == (
                "done", None, 0)
            async with request_log.db.connect() as conn:
                tables = {r[0] for r in await conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'table'"))}
            assert {"requests", "clips", "cursors", "alembic_version"} <= tables
            assert "schema_version" not in tables
        finally:
            await request_log.close()


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    request_log = await RequestLog.open(db_url(tmp_path))
    async with request_log.db.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    await request_log.close()
    with pytest.raises(RuntimeError, match="newer than this code"):
        await RequestLog.open(db_url(tmp_path))


def test_processes_starting_together_migrate_once(tmp_path: Path) -> None:
    """Four processes open a fresh database at once: one creates it, none fails."""
    url = db_url(tmp_path)
    script = ("import asyncio, sys\n"
              "from core.storage.request_log import RequestLog\n"
              "from tests.core.storage.schema import schema_revision\n"
              "async def main():\n"
              "    log = await RequestLog.open(sys.argv[1])\n"
              "    print(await schema_revision(log))\n"
              "    await log.close()\n"
              "asyncio.run(main())\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {head_revision()}


def test_a_missing_database_driver_is_one_line_naming_the_package() -> None:
    with pytest.raises(ConfigError) as caught:
        RequestLog("postgresql+psycopg://sonify:p%40ss@127.0.0.1/sonify")
    assert str(caught.value) == ("[storage] database_url: the 'psycopg' database driver is not "
                                 "installed; install it with: pip install 'psycopg[binary]'")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on PostgreSQL (a real server on loopback)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return db_url(tmp_path)


async def test_rows_round_trip_and_user_window_ignores_rejections(any_db_url: str) -> None:
    request_log = await RequestLog.open(any_db_url)
    try:
        await request_log.insert(row("a", created=100.0, options=GenerationOptions().to_dict(),
                             reply_context={"message_id": 7, "thread": "x"}, seed=42))
        await request_log.insert(row("b", created=200.0, status="rejected", reason="busy"))
        await request_log.insert(row("c", created=300.0, status="done"))
        await request_log.insert(row("d", user="u2", created=400.0, status="running"))
        got = await request_log.get("a")
        assert got is not None
        assert got.reply_context == {"message_id": 7, "thread": "x"}
        assert got.generation_options == GenerationOptions()
        assert got.seed == 42
        assert await request_log.get("missing") is None
        assert await request_log.user_window("telegram", "u1", 50.0) == (2, 100.0)
        assert await request_log.user_window("telegram", "u1", 150.0) == (1, 300.0)
        assert [r.id for r in await request_log.unfinished()] == ["a", "d"]
        await request_log.mark_started(["a"], 160.0, 3)
        got = await request_log.get("a")
        assert got is not None
        assert (got.status, got.batch_size, got.queue_wait_s) == ("running", 3, 60.0)
        # A late mark never revives a finished row; a request newer than the start waited 0 s.
        await request_log.insert(row("e", created=170.0))
        await request_log.mark_started(["c", "e"], 160.0, 3)
        done, late = await request_log.get("c"), await request_log.get("e")
        assert done is not None and (done.status, done.started_at) == ("done", None)
        assert late is not None and (late.status, late.queue_wait_s) == ("running", 0.0)
        # `update` takes typed fields (mypy refuses this call); at run time, SQLAlchemy does.
        with pytest.raises(CompileError, match="colour"):
            await request_log.update("a", colour="red")
    finally:
        await request_log.close()


class Clock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_clip(cache: ClipCache, clip_id: str) -> tuple[dict[str, Path], float]:
    audio = np.sin(np.linspace(0, 400, 16_000)).astype(np.float32)
    return cache.write(clip_id, audio, 16_000)


async def test_cache_evicts_least_recently_used_but_keeps_recent_files(tmp_path: Path) -> None:
    request_log = await RequestLog.open(db_url(tmp_path))
    clock = Clock()
    root = tmp_path / "cache"
    probe = ClipCache(request_log, root, 10**9, clock=clock)
    files, _ = write_clip(probe, "probe")
    size = sum(p.stat().st_size for p in files.values())
    for p in files.values():
        p.unlink()
    # Room for two clips; a clip used in the last minute is never evicted.
    cache = ClipCache(request_log, root, int(size * 2.5), keep_recent_s=60, clock=clock)
    await cache.start()
    opts = GenerationOptions()
    keys = [cache_key(model_tag="m", options=opts, prompt=f"p{i}", seed=1) for i in range(5)]

    async def add(i: int) -> None:
        files, duration = write_clip(cache, f"clip{i}")
        await cache.add(clip_id=f"clip{i}", key=keys[i], caption="", prompt=f"p{i}", seed=1,
                        duration_s=duration, files=files)

    await add(0)
    clock.now += 100
    await add(1)
    clock.now += 100
    assert await cache.lookup(keys[0]) is not None  # clip0 is now the most recently used
    clock.now += 100
    await add(2)  # over the cap: the least recently used (clip1) goes, not the oldest
    assert await cache.lookup(keys[1]) is None and not (root / "clip1.ogg").exists()
    assert await cache.lookup(keys[0]) is not None
    assert await cache.index.total_bytes() <= int(size * 2.5)
    # Clips used in the last minute are protected even over the cap...
    clock.now += 1
    await add(3)
    clock.now += 1
    await add(4)
    assert all((root / f"clip{i}.ogg").exists() for i in (0, 2, 3, 4))
    assert await cache.index.total_bytes() > int(size * 2.5)
    # ...and go (oldest use first) once that minute has passed.
    clock.now += 61
    await cache.evict()
    assert await cache.index.total_bytes() <= int(size * 2.5)
    hit = await cache.lookup(keys[4])
    assert hit is not None and hit.files["ogg"].is_file() and hit.files["mp3"].is_file()
    assert await cache.lookup(keys[0]) is None and await cache.lookup(keys[2]) is None

    # The index survives a restart; a clip whose files vanished is dropped; strays are removed.
    (root / "stray.ogg").write_bytes(b"junk")
    hit.files["mp3"].unlink()
    await request_log.close()
    request_log = await RequestLog.open(db_url(tmp_path))
    cache = ClipCache(request_log, root, int(size * 2.5), keep_recent_s=60, clock=clock)
    await cache.start()
    assert not (root / "stray.ogg").exists()
    assert await cache.lookup(keys[3]) is not None
    assert await cache.lookup(keys[4]) is None
    await request_log.close()


async def test_disabled_cache_serves_nothing_and_cleans_up_after_grace(tmp_path: Path) -> None:
    request_log = await RequestLog.open(db_url(tmp_path))
    clock = Clock()
    cache = ClipCache(request_log, tmp_path / "cache", 0, keep_recent_s=60, clock=clock)
    await cache.start()
    key = cache_key(model_tag="m", options=GenerationOptions(), prompt="x", seed=1)
    files, duration = write_clip(cache, "only")
    await cache.add(clip_id="only", key=key, caption="", prompt="x", seed=1,
                    duration_s=duration, files=files)
    assert await cache.lookup(key) is None
    assert files["ogg"].exists()  # the adapter is still sending it
    clock.now += 61
    assert await cache.evict() == 1
    assert not files["ogg"].exists() and not files["mp3"].exists()
    await request_log.close()


def test_cache_key_separates_sources_options_seeds_and_models() -> None:
    opts = GenerationOptions()
    base = cache_key(model_tag="m", options=opts, image_sha256="abc")
    assert base == cache_key(model_tag="m", options=opts, image_sha256="abc", seed="auto")
    assert base != cache_key(model_tag="m", options=opts, image_sha256="abc", seed=5)
    assert base != cache_key(model_tag="n", options=opts, image_sha256="abc")
    assert base != cache_key(model_tag="m", options=GenerationOptions(seconds=4.0),
                             image_sha256="abc")
    assert (cache_key(model_tag="m", options=opts, caption="abc", seed=1)
            != cache_key(model_tag="m", options=opts, prompt="abc", seed=1))


async def test_rows_hold_only_the_values_the_domain_names(any_db_url: str) -> None:
    """Status, delivery, platform and source kind are checked by the tables themselves."""
    request_log = await RequestLog.open(any_db_url)
    try:
        await request_log.insert(row("fine", delivery=Delivery.OWED))
        for n, (column, value) in enumerate([("status", "lost"), ("delivery", "maybe"),
                                             ("platform", "myspace"), ("source_kind", "fax")]):
            with pytest.raises(IntegrityError):
                await request_log.insert(dataclasses.replace(row(f"bad{n}"), **{column: value}))
        assert [r.id for r in await request_log.unfinished()] == ["fine"]
    finally:
        await request_log.close()


async def test_a_log_from_before_the_checks_keeps_its_rows(tmp_path: Path) -> None:
    """Revision 0006 adds the checks to a table that already has rows (SQLite copies it)."""
    url = db_url(tmp_path)
    request_log = RequestLog(url)
    try:
        async with request_log.db.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0005"))
            # The row as 0005 stores it: none of the columns later revisions add.
            values = {k: v for k, v in row_values(row("before", status="done", user="kept"))
                      .items() if k not in MOVING_COLUMNS}
            await conn.execute(insert(requests).values(**values))
    finally:
        await request_log.close()
    request_log = await RequestLog.open(url)
    try:
        kept = await request_log.get("before")
        assert kept is not None and (kept.status, kept.user_id) == ("done", "kept")
        with pytest.raises(IntegrityError):
            await request_log.insert(row("after", status="lost"))
    finally:
        await request_log.close()


MOVING_COLUMNS = ("input_kind", "output_kind", "input_seconds", "sound_fit")


async def test_moving_picture_values_are_checked(tmp_path: Path) -> None:
    """Revision 0009: Telegram's moving source kinds are allowed, and the input kind, output
    kind and sound fit of a row can only be the values core/records.py names."""
    request_log = await RequestLog.open(db_url(tmp_path))
    try:
        await request_log.insert(dataclasses.replace(
            row("note"), source_kind=SourceKind.VIDEO_NOTE, input_kind=InputKind.VIDEO,
            output_kind=OutputKind.AUDIO_ONLY, input_seconds=3.5, sound_fit=SoundFit.LOOPED))
        kept = await request_log.get("note")
        assert kept is not None
        assert (kept.source_kind, kept.input_kind, kept.output_kind, kept.sound_fit) == (
            SourceKind.VIDEO_NOTE, InputKind.VIDEO, OutputKind.AUDIO_ONLY, SoundFit.LOOPED)
        for n, (column, value) in enumerate((("input_kind", "gif"), ("output_kind", "image"),
                                             ("sound_fit", "stretched"),
                                             ("source_kind", "film"))):
            with pytest.raises(IntegrityError):
                await request_log.insert(dataclasses.replace(row(f"bad{n}"), **{column: value}))
    finally:
        await request_log.close()
