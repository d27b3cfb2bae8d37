"""The redis backend in one process: an adapter-side engine and a worker on real Redis and
PostgreSQL — the same answers as the local engine, with the limits counted in the rows."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix
from redis.exceptions import ConnectionError as RedisConnectionError

from core.distributed.redis_queue import connect, enqueue
from core.errors import QueueFull, RateLimited
from core.jobs.events import Done, Failed, JobHandle, Progress, Queued, Started
from core.stats.collect import collect_stats
from core.stats.render import render_stats_text
from core.storage.request_log import RequestLog
from tests.core.distributed.support import (
    adapter_engine,
    eventually,
    redis_config,
    render_worker,
)
from tests.core.jobs.engine_support import WrappedPipeline, image_request, picture, text_request
from tests.local_servers import RedisServer

pytestmark = pytest.mark.timeout(180)


def configs(tmp_path: Path, postgres_url: str, redis: RedisServer, **jobs: Any) -> tuple:
    """An adapter's and a worker's config: one database, separate folders (machines)."""
    return (redis_config(tmp_path / "adapter", postgres_url, redis.url, **jobs),
            redis_config(tmp_path / "worker", postgres_url, redis.url, **jobs))


async def test_jobs_of_several_users_share_a_worker_batch_and_come_back_with_clips(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer,
        tiny_pipeline: Any) -> None:
    adapter_cfg, worker_cfg = configs(tmp_path, postgres_url, redis_server, max_batch=4)
    async with adapter_engine(adapter_cfg) as engine:
        handles = [await engine.submit(text_request(adapter_cfg, f"u{n}", f"rain number {n}"))
                   for n in range(4)]
        assert all(isinstance(h.last_event, Queued) for h in handles)
        assert [h.last_event.position for h in handles] == [1, 2, 3, 4]
        async with render_worker(worker_cfg, tiny_pipeline, name="gpu-a") as worker:
            results = [await asyncio.wait_for(h.result(), 60) for h in handles]
            assert max(worker.dispatcher.batches) > 1  # users' jobs shared one model call
        for handle, result in zip(handles, results, strict=True):
            # The clip was encoded on the worker's machine; the adapter has it from the DB.
            assert result.files["ogg"].parent == adapter_cfg.data_dir / "cache"
            assert result.files["ogg"].read_bytes()[:4] == b"OggS"
            assert any(isinstance(e, Started) for e in handle._history)
            assert any(isinstance(e, Progress) for e in handle._history)
            row = await engine.request_log.get(handle.id)
            assert row is not None and row.status == "done" and row.worker == "gpu-a"
            assert row.attempts == 1 and row.caption == result.caption
        # The admins' stats cover the worker: its jobs and their mean batch size.
        stats = await collect_stats(engine.request_log)
        assert [(w.name, w.jobs) for w in stats.workers] == [("gpu-a", 4)]
        batch = stats.workers[0].mean_batch
        assert batch > 1
        assert f"Workers (7 days, computed jobs): gpu-a 4 (mean batch {batch:.1f})" \
            in render_stats_text(stats)


async def test_limits_hold_across_adapter_processes(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer) -> None:
    cfg_a, cfg_b = configs(tmp_path, postgres_url, redis_server, per_user_concurrent=1,
                           max_queue=2)
    async with adapter_engine(cfg_a) as one, adapter_engine(cfg_b) as other:
        await one.submit(text_request(cfg_a, "ann", "wind"))
        with pytest.raises(RateLimited) as running:
            await other.submit(text_request(cfg_b, "ann", "more wind"))
        assert running.value.code == "too_many_running"
        await other.submit(text_request(cfg_b, "bob", "waves"))
        with pytest.raises(QueueFull):
            await one.submit(text_request(cfg_a, "cat", "birds"))
        rows = await one.request_log.rows_since(0)
        assert sorted((r.user_id, r.status) for r in rows) == [
            ("ann", "queued"), ("ann", "rejected"), ("bob", "queued"), ("cat", "rejected")]


async def test_turns_alternate_between_users_whichever_process_queued_them(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer) -> None:
    cfg_a, cfg_b = configs(tmp_path, postgres_url, redis_server, per_user_concurrent=5)
    async with adapter_engine(cfg_a) as one, adapter_engine(cfg_b) as other:
        ann = [await one.submit(text_request(cfg_a, "ann", f"ann {n}")) for n in range(3)]
        bob = await other.submit(text_request(cfg_b, "bob", "bob 0"))
        # Bob's first job goes before Ann's second, though it came last.
        assert await one.transport.rows.position(bob.id) == 2
        assert await one.transport.rows.position(ann[1].id) == 3


async def test_a_job_taken_too_often_fails_alone_with_an_apology(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer,
        tiny_pipeline: Any) -> None:
    adapter_cfg, worker_cfg = configs(tmp_path, postgres_url, redis_server, max_tries=2)
    async with adapter_engine(adapter_cfg) as engine:
        doomed = await engine.submit(text_request(adapter_cfg, "ann", "crashes workers"))
        fine = await engine.submit(text_request(adapter_cfg, "bob", "a quiet night"))
        for _ in range(2):  # two workers died while rendering it
            await engine.request_log.row_queue.attempt(doomed.id, "dead-worker")
        async with render_worker(worker_cfg, tiny_pipeline):
            failed = await asyncio.wait_for(_outcome(doomed), 60)
            done = await asyncio.wait_for(_outcome(fine), 60)
        assert isinstance(failed, Failed) and failed.error.code == "failed"
        assert isinstance(done, Done)
        row = await engine.request_log.get(doomed.id)
        assert row is not None and row.status == "failed" and row.attempts == 3


async def test_jobs_come_back_after_redis_lost_its_data(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer,
        tiny_pipeline: Any) -> None:
    adapter_cfg, worker_cfg = configs(tmp_path, postgres_url, redis_server)
    async with adapter_engine(adapter_cfg) as engine:
        handles = [await engine.submit(text_request(adapter_cfg, f"u{n}", f"sea {n}"))
                   for n in range(3)]
        redis_server.restart_empty()  # no worker ran yet: the queue is gone with Redis
        async with render_worker(worker_cfg, tiny_pipeline) as worker:
            # Rows older than the redelivery delay go back into the queue.
            worker._clock = lambda: 10**10
            assert await worker.sweep_once() == 3
            assert await worker.sweep_once() == 0  # known to Redis again: not twice
            results = [await asyncio.wait_for(h.result(), 60) for h in handles]
        assert all(r.files["ogg"].exists() for r in results)


async def test_the_workers_own_sweep_puts_back_what_redis_lost(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer, tiny_pipeline: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """Nothing here calls `sweep_once`: the worker's periodic sweep must come round by itself
    and hand the rows Redis forgot back to the queue."""
    adapter_cfg, worker_cfg = configs(tmp_path, postgres_url, redis_server)
    # Below the configurable 5 s, so the loop (every redeliver_after_s / 2) comes round soon.
    worker_cfg = replace(worker_cfg, jobs=replace(worker_cfg.jobs, redeliver_after_s=1.0))
    caplog.set_level(logging.WARNING, logger="core.distributed.worker")
    async with adapter_engine(adapter_cfg) as engine:
        handles = [await engine.submit(text_request(adapter_cfg, f"u{n}", f"gull {n}"))
                   for n in range(2)]
        redis_server.restart_empty()  # the queue is gone with Redis; the rows remain
        async with render_worker(worker_cfg, tiny_pipeline):
            results = [await asyncio.wait_for(h.result(), 60) for h in handles]
        assert all(r.files["ogg"].read_bytes()[:4] == b"OggS" for r in results)
        rows = [await engine.request_log.get(h.id) for h in handles]
        assert [(r.status, r.worker, r.attempts) for r in rows if r] == [("done", "w1", 1)] * 2
    put_back = [int(r.getMessage().split()[1]) for r in caplog.records
                if r.getMessage().endswith("back in the queue that Redis no longer knew")]
    assert sum(put_back) == 2


async def test_a_worker_that_stops_leaves_its_queued_jobs_for_the_next(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer,
        tiny_pipeline: Any) -> None:
    adapter_cfg, worker_cfg = configs(tmp_path, postgres_url, redis_server, max_batch=1)
    gate_pipeline = WrappedPipeline(tiny_pipeline, delay_s=1.0)
    async with adapter_engine(adapter_cfg) as engine:
        handles = [await engine.submit(text_request(adapter_cfg, f"u{n}", f"owl {n}"))
                   for n in range(3)]
        async with render_worker(worker_cfg, gate_pipeline, name="first") as first:
            await eventually(lambda: _status(engine.request_log, handles[0], "running"))
            await first.stop(30)  # the running one finishes; nothing else is taken
        assert await _status(engine.request_log, handles[0], "done")
        assert [await _status(engine.request_log, h, "queued") for h in handles[1:]] == [
            True, True]
        async with render_worker(worker_cfg, tiny_pipeline, name="second"):
            await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
        rows = [await engine.request_log.get(h.id) for h in handles]
        assert [(r.worker, r.attempts) for r in rows if r] == [
            ("first", 1), ("second", 1), ("second", 1)]


async def test_an_adapter_restarted_mid_job_follows_its_rows_to_the_answer(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer,
        tiny_pipeline: Any) -> None:
    adapter_cfg, worker_cfg = configs(tmp_path, postgres_url, redis_server)
    async with adapter_engine(adapter_cfg) as engine:
        picture_job = await engine.submit(image_request(adapter_cfg, "ann", picture(1)))
        job_id = picture_job.id
    # The adapter process is gone; a worker renders meanwhile; the adapter comes back.
    async with render_worker(worker_cfg, tiny_pipeline):
        async with adapter_engine(adapter_cfg) as engine:
            handed: list[JobHandle] = []

            async def collect(handle: JobHandle) -> None:
                handed.append(handle)

            engine.on_recovered("telegram", collect)
            assert await engine.resume_recovered() == 1
            await eventually(lambda: _true(bool(handed)))
            result = await asyncio.wait_for(handed[0].result(), 60)
    assert result.request_id == job_id and result.caption


async def test_another_process_serves_a_finished_clip_from_the_database(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer,
        tiny_pipeline: Any) -> None:
    adapter_cfg, worker_cfg = configs(tmp_path, postgres_url, redis_server)
    async with adapter_engine(adapter_cfg) as engine:
        handle = await engine.submit(text_request(adapter_cfg, "ann", "thunder"))
        async with render_worker(worker_cfg, tiny_pipeline):
            result = await asyncio.wait_for(handle.result(), 60)
    elsewhere = redis_config(tmp_path / "second-web", postgres_url, redis_server.url)
    async with adapter_engine(elsewhere) as other:
        record = await other.get_request(handle.id)
        assert record is not None and record.status == "done"
        files = await other.clip_files(record)
    assert files is not None
    assert files["mp3"].parent == elsewhere.data_dir / "cache"
    assert files["mp3"].read_bytes() == result.files["mp3"].read_bytes()


async def test_enqueueing_a_request_twice_runs_it_once(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer,
        tiny_pipeline: Any) -> None:
    adapter_cfg, worker_cfg = configs(tmp_path, postgres_url, redis_server)
    pipeline = WrappedPipeline(tiny_pipeline)
    async with adapter_engine(adapter_cfg) as engine:
        handle = await engine.submit(text_request(adapter_cfg, "ann", "one bell"))
        pool = await connect(redis_server.url)
        try:
            assert not await enqueue(pool, handle.id, 1, 0.0)
        finally:
            await pool.aclose()
        async with render_worker(worker_cfg, pipeline):
            await asyncio.wait_for(handle.result(), 60)
    assert pipeline.calls == [1]


async def _outcome(handle: JobHandle) -> Done | Failed:
    async for event in handle.events():
        if isinstance(event, Done | Failed):
            return event
    raise AssertionError("no outcome")


async def _status(request_log: RequestLog, handle: JobHandle, status: str) -> bool:
    row = await request_log.get(handle.id)
    return row is not None and row.status == status


async def _true(value: bool) -> bool:
    return value


async def test_another_process_follows_a_job_live_to_its_clip(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer,
        tiny_pipeline: Any) -> None:
    adapter_cfg, worker_cfg = configs(tmp_path, postgres_url, redis_server)
    elsewhere = redis_config(tmp_path / "second-web", postgres_url, redis_server.url)
    async with adapter_engine(adapter_cfg) as engine, adapter_engine(elsewhere) as other:
        handle = await engine.submit(text_request(adapter_cfg, "ann", "a kettle"))
        followed = await other.follow(handle.id)
        assert followed is not None and followed.last_event == Queued(1)
        assert await other.follow("no-such-id") is None
        async with render_worker(worker_cfg, tiny_pipeline):
            result = await asyncio.wait_for(followed.result(), 60)
        assert any(isinstance(e, Started) for e in followed._history)
        assert result.files["ogg"].parent == elsewhere.data_dir / "cache"
        assert result.caption == (await handle.result()).caption


async def test_a_job_whose_lease_could_not_be_taken_is_queued_again(
        tmp_path: Path, postgres_url: str, redis_server: RedisServer, tiny_pipeline: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis goes away between handing a job to a worker and the worker's lease on it (seen
    when Redis restarted under load): the job is not lost, and that try does not count."""
    adapter_cfg, worker_cfg = configs(tmp_path, postgres_url, redis_server)
    async with adapter_engine(adapter_cfg) as engine:
        async with render_worker(worker_cfg, tiny_pipeline) as worker:
            assert worker.pool is not None
            set_key, refused = worker.pool.set, asyncio.Event()

            async def redis_gone_once(name: str, *args: Any, **kwargs: Any) -> Any:
                if name.startswith(in_progress_key_prefix) and not refused.is_set():
                    refused.set()
                    raise RedisConnectionError("Connection closed by server.")
                return await set_key(name, *args, **kwargs)

            monkeypatch.setattr(worker.pool, "set", redis_gone_once)
            handle = await engine.submit(text_request(adapter_cfg, "ann", "wind in reeds"))
            await asyncio.wait_for(refused.wait(), 30)
            await eventually(lambda: _status(engine.request_log, handle, "queued"))
            worker._clock = lambda: 10**10  # past the redelivery delay
            await eventually(worker.sweep_once)  # back in the queue once arq let go of it
            result = await asyncio.wait_for(handle.result(), 60)
        assert result.files["ogg"].read_bytes()[:4] == b"OggS"
        row = await engine.request_log.get(handle.id)
        assert row is not None and (row.status, row.attempts) == ("done", 1)
