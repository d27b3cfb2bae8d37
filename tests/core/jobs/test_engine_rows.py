"""The request log as an admin reads it: every outcome's row, riders, credentials, slow loads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from core.errors import BadRequest, GenerationFailed, ImageRejected, RateLimited
from core.jobs.engine import Engine
from core.jobs.events import Started
from core.jobs.local import local_engine
from core.records import RequestRecord
from core.storage.request_log import RequestLog
from tests.conftest import make_config
from tests.core.jobs.engine_support import (
    POISON_COLOR,
    WrappedPipeline,
    gated_engine,
    image_request,
    picture,
    restarted_engine,
    running_engine,
    text_request,
    wait_for,
)

TIMINGS = ("queue_wait_s", "caption_s", "sound_s", "encode_s", "total_s")


async def row(engine: Engine, request_id: str) -> RequestRecord:
    record = await engine.get_request(request_id)
    assert record is not None, f"no row for {request_id}"
    return record


def assert_identity(record: RequestRecord, user: str) -> None:
    assert (record.platform, record.user_id, record.chat_id) == ("telegram", user, f"chat-{user}")
    assert record.source_kind in ("photo", "text") and record.lang == "en"
    assert record.options is not None and record.options["seconds"] == 1.0
    assert record.created_at > 0 and record.finished_at is not None
    assert record.finished_at >= record.created_at


async def test_every_outcome_leaves_a_complete_row(tmp_path: Path, tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = make_config(tmp_path, jobs={"max_batch": 2, "per_user_concurrent": 2,
                                      "per_user_per_hour": 5})
    pipe = WrappedPipeline(tiny_pipeline, gate=gate)
    async with running_engine(cfg, pipe) as engine:
        # A batch of two forms behind a busy worker; then a poisoned picture fails alone.
        blocker = await engine.submit(text_request(cfg, "zed", "busy", seed=7))
        await wait_for(blocker, Started)
        good = await engine.submit(image_request(cfg, "ann", picture(1), seed=3,
                                                 reply_context={"message_id": 9}))
        await engine.submit(image_request(cfg, "gus", picture(3)))
        gate.set()
        result = await good.result()
        bad = await engine.submit(image_request(cfg, "bob", picture(0, color=POISON_COLOR)))
        with pytest.raises(GenerationFailed):
            await bad.result()
        # The same picture and seed again: a cache hit.
        hit = await (await engine.submit(image_request(cfg, "cat", picture(1), seed=3))).result()
        # Refused by the engine (bad seed, then the hourly limit) and by an adapter.
        with pytest.raises(BadRequest):
            await engine.submit(image_request(cfg, "dan", picture(2), seed=-5,
                                              reply_context={"message_id": 1}))
        for i in range(5):
            await (await engine.submit(text_request(cfg, "eve", "hum", seed=i))).result()
        with pytest.raises(RateLimited):
            await engine.submit(text_request(cfg, "eve", "hum", seed=99))
        adapter_refusal = await engine.reject(platform="telegram", user_id="fay",
                                              chat_id="chat-fay", source_kind="url", lang="es",
                                              error=ImageRejected("no", code="bad_url"))
        rows = {r.user_id: r for r in
                [RequestRecord.from_row(x) for x in await engine.request_log.rows_since(0)]
                if r.status in ("rejected",)}
        done, failed, cached = (await row(engine, good.id), await row(engine, bad.id),
                                await row(engine, hit.request_id))

    # Computed: every timing, the batch, what it made, where the clip is.
    assert_identity(done, "ann")
    assert (done.status, done.reason, done.cache_hit, done.batch_size) == ("done", None, False, 2)
    assert all(getattr(done, t) is not None and getattr(done, t) >= 0 for t in TIMINGS)
    assert done.total_s >= done.queue_wait_s  # type: ignore[operator]
    assert done.caption == result.caption and done.prompt == result.prompt and done.seed == 3
    assert done.image_sha256 == picture(1).sha256 and done.cache_key
    assert done.duration_s == pytest.approx(result.duration_s)
    assert done.files == {k: v.name for k, v in result.files.items()}  # names in the cache
    assert done.started_at is not None and done.reply_context == {"message_id": 9}
    # Failed: why, how long it waited, how long it took.
    assert_identity(failed, "bob")
    assert (failed.status, failed.reason, failed.batch_size) == ("failed", "failed", 1)
    assert failed.queue_wait_s is not None and failed.total_s is not None
    assert failed.image_sha256 and failed.seed is not None and failed.files is None
    # Cache hit: answered at once, no batch, the stored clip.
    assert_identity(cached, "cat")
    assert (cached.status, cached.cache_hit, cached.batch_size) == ("done", True, 0)
    assert all(getattr(cached, t) is not None for t in TIMINGS)
    assert cached.caption == done.caption and cached.files == done.files
    # Refusals: the reason, and what was asked (no answer data is kept for them).
    seed_refusal, limit_refusal, link_refusal = rows["dan"], rows["eve"], rows["fay"]
    assert (seed_refusal.reason, seed_refusal.seed) == ("bad_seed", None)
    assert seed_refusal.image_sha256 == picture(2).sha256 and seed_refusal.reply_context == {}
    assert (limit_refusal.reason, limit_refusal.seed, limit_refusal.prompt) == (
        "hourly_limit", 99, "hum")
    for refusal in (seed_refusal, limit_refusal):
        assert_identity(refusal, refusal.user_id)
        assert refusal.total_s == 0.0 and refusal.started_at is None
    assert link_refusal.id == adapter_refusal
    assert (link_refusal.reason, link_refusal.lang, link_refusal.source_kind) == (
        "bad_url", "es", "url")


async def test_interrupted_row_after_a_restart(tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"max_batch": 1})
    request_log, engine, gate = await gated_engine(cfg, tiny_pipeline)
    running = await engine.submit(image_request(cfg, "ann", picture(1)))
    await wait_for(running, Started)
    await engine.stop(0.1)  # the "crash": the row stays running
    gate.set()
    await request_log.close()
    (cfg.data_dir / "spool" / f"{running.id}.png").unlink()

    request_log, engine, told, resumed = await restarted_engine(cfg, tiny_pipeline)
    try:
        assert resumed == 1
        record = await row(engine, running.id)
    finally:
        await engine.stop(5)
        await request_log.close()
    assert_identity(record, "ann")
    assert (record.status, record.reason, record.batch_size) == ("interrupted", "interrupted", 1)
    assert record.queue_wait_s is not None and record.total_s is not None
    assert record.total_s >= record.queue_wait_s and record.image_sha256
    assert [h.id for h in told] == [running.id]


async def test_a_rider_joining_a_running_job_is_logged_as_running(tmp_path: Path,
                                                                   tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = make_config(tmp_path)
    pipe = WrappedPipeline(tiny_pipeline, gate=gate)
    async with running_engine(cfg, pipe) as engine:
        leader = await engine.submit(image_request(cfg, "ann", picture(4)))
        await wait_for(leader, Started)
        rider = await engine.submit(image_request(cfg, "bob", picture(4)))
        await wait_for(rider, Started)
        during = await row(engine, rider.id)
        gate.set()
        first, second = await leader.result(), await rider.result()
        after = await row(engine, rider.id)
    assert (during.status, during.batch_size, during.queue_wait_s) == ("running", 1, 0.0)
    assert during.started_at is not None and during.started_at >= during.created_at
    assert pipe.calls == [1]
    assert second.cache_hit and not first.cache_hit and second.files == first.files
    assert (after.status, after.cache_hit, after.batch_size, after.queue_wait_s) == (
        "done", True, 1, 0.0)


async def test_a_rider_whose_job_ends_while_it_is_logged_gets_the_cached_clip(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    pipe = WrappedPipeline(tiny_pipeline)
    async with running_engine(cfg, pipe) as engine:
        leader = await engine.submit(image_request(cfg, "ann", picture(5)))
        insert = engine.request_log.insert

        async def slow_insert(record: RequestRecord) -> None:
            if record.id != leader.id:  # the rider's row: the leader finishes meanwhile
                await leader.result()
            await insert(record)

        engine.request_log.insert = slow_insert  # type: ignore[method-assign]
        rider = await engine.submit(image_request(cfg, "bob", picture(5)))
        engine.request_log.insert = insert  # type: ignore[method-assign]
        assert rider.finished
        result = await rider.result()
        record = await row(engine, rider.id)
        assert engine.queue_length() == 0
    assert pipe.calls == [1]
    assert result.cache_hit and (record.status, record.cache_hit) == ("done", True)
    assert result.files == (await leader.result()).files


async def test_credential_like_reply_context_is_not_stored(tmp_path: Path,
                                                          tiny_pipeline: Any,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    cfg = make_config(tmp_path)
    secret = "itok-0123456789abcdef"
    async with running_engine(cfg, tiny_pipeline) as engine:
        handle = await engine.submit(text_request(cfg, "ann", "rain", seed=1, reply_context={
            "channel_id": "42", "interaction_token": secret, "Authorization": secret}))
        await handle.result()
        record = await row(engine, handle.id)
        raw = await engine.request_log.rows_since(0)
    assert record.reply_context == {"channel_id": "42"}
    assert secret not in repr(raw) and secret not in caplog.text
    assert handle.request.reply_context["interaction_token"] == secret  # the adapter keeps it


class SlowToLoad:
    """A factory whose models take longer to load than a job may take to render."""

    def __init__(self, inner: Any, load_s: float) -> None:
        self.inner, self.load_s, self.loads = inner, load_s, 0

    def __call__(self) -> Any:
        self.loads += 1
        time.sleep(self.load_s)
        return self.inner


async def test_a_slow_first_load_does_not_time_the_job_out(tmp_path: Path,
                                                           tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"job_timeout_s": 1.5})
    factory = SlowToLoad(tiny_pipeline, load_s=1.8)
    request_log = await RequestLog.open(cfg.database_url)
    engine = local_engine(cfg, request_log, pipeline_factory=factory)
    await engine.start()
    try:
        handle = await engine.submit(text_request(cfg, "u", "first of the day"))
        result = await asyncio.wait_for(handle.result(), 30)
    finally:
        await engine.stop(5)
        await request_log.close()
    assert result.files["ogg"].is_file() and result.prompt == "first of the day"
    assert factory.loads == 1


async def test_a_job_and_its_rider_cut_short_are_both_answered_after_restart(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    request_log, engine, gate = await gated_engine(cfg, tiny_pipeline)
    leader = await engine.submit(image_request(cfg, "ann", picture(6), reply_context={"n": 1}))
    await wait_for(leader, Started)
    rider = await engine.submit(image_request(cfg, "bob", picture(6), reply_context={"n": 2}))
    await engine.stop(0.1)
    gate.set()
    assert {(await request_log.get(h.id)).status for h in (leader, rider)} == {"running"}  # type: ignore[union-attr]
    await request_log.close()

    pipe = WrappedPipeline(tiny_pipeline)
    request_log, engine, handed, resumed = await restarted_engine(cfg, pipe)
    try:
        assert resumed == 2
        results = {h.request.reply_context["n"]: await asyncio.wait_for(h.result(), 30)
                   for h in handed}
        records = [await row(engine, h.id) for h in (leader, rider)]
    finally:
        await engine.stop(5)
        await request_log.close()
    assert pipe.calls == [1]  # still computed once
    assert sorted(r.cache_hit for r in results.values()) == [False, True]
    assert results[1].files == results[2].files
    assert [(r.status, r.user_id) for r in records] == [("done", "ann"), ("done", "bob")]


class Scored(WrappedPipeline):
    """Results as from a pipeline that compared takes: each kept take carries its score."""

    def run(self, inputs: Sequence[Any], options: Any, progress: Any = None) -> list[Any]:
        results = super().run(inputs, options, progress)
        for n, result in enumerate(results):
            result.score = 0.25 + n / 10
        return results


async def test_the_kept_takes_score_is_stored_with_the_request(tmp_path: Path,
                                                               tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    async with running_engine(cfg, Scored(tiny_pipeline)) as engine:
        handle = await engine.submit(text_request(cfg, "ann", "wind in tall grass"))
        result = await asyncio.wait_for(handle.result(), 30)
        record = await row(engine, handle.id)
    assert result.score == pytest.approx(0.25) and record.score == pytest.approx(0.25)
