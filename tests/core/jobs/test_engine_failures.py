"""Failure isolation, shutdown and recovery, with the tiny models behind misbehaving wrappers."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core.errors import BadRequest, GenerationFailed, ModelMissingError, ShuttingDown
from core.i18n import describe_error
from core.jobs.events import Failed, Started
from core.jobs.local import local_engine
from core.storage.request_log import RequestLog
from tests.conftest import make_config
from tests.core.jobs.engine_support import (
    POISON_COLOR,
    WrappedPipeline,
    events_of,
    gated_engine,
    image_request,
    picture,
    restarted_engine,
    running_engine,
    text_request,
    wait_for,
)


async def test_poisoned_job_fails_alone_and_the_worker_keeps_serving(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"max_batch": 4, "max_wait_ms": 2000,
                                      "per_user_concurrent": 4})
    pipe = WrappedPipeline(tiny_pipeline)
    async with running_engine(cfg, pipe) as engine:
        pics = [picture(1), picture(2), picture(0, color=POISON_COLOR), picture(3)]
        handles = [await engine.submit(image_request(cfg, "u", p)) for p in pics]
        outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
        later = await (await engine.submit(image_request(cfg, "v", picture(4)))).result()
        records = [await engine.get_request(h.id) for h in handles]
    poisoned = outcomes[2]
    assert isinstance(poisoned, GenerationFailed) and poisoned.code == "failed"
    assert describe_error(poisoned) == "Sorry, generating the sound failed. Please try again."
    assert all(not isinstance(o, BaseException) and o.files["ogg"].is_file()
               for i, o in enumerate(outcomes) if i != 2)
    assert pipe.calls[:5] == [4, 1, 1, 1, 1]  # the batch, then one by one
    assert later.files["ogg"].is_file()
    assert [(r.status, r.reason) for r in records if r] == [
        ("done", None), ("done", None), ("failed", "failed"), ("done", None)]


async def test_out_of_memory_splits_the_batch(tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"max_batch": 4, "max_wait_ms": 2000,
                                      "per_user_concurrent": 4})
    pipe = WrappedPipeline(tiny_pipeline, oom_above=2)
    async with running_engine(cfg, pipe) as engine:
        handles = [await engine.submit(image_request(cfg, "u", picture(10 + i)))
                   for i in range(4)]
        results = await asyncio.gather(*(h.result() for h in handles))
        records = [await engine.get_request(h.id) for h in handles]
    assert pipe.calls == [4, 2, 2]
    assert [r.batch_size for r in results] == [2, 2, 2, 2]
    assert all(r is not None and r.status == "done" and r.batch_size == 2 for r in records)


async def test_a_job_past_the_timeout_fails_alone(tmp_path: Path, tiny_pipeline: Any) -> None:
    # Long enough for a tiny render on a loaded 2-core machine, short for the test.
    cfg = make_config(tmp_path, jobs={"job_timeout_s": 2.0, "max_batch": 2,
                                      "max_wait_ms": 2000})
    pipe = WrappedPipeline(tiny_pipeline, hang_prompt="hang")
    async with running_engine(cfg, pipe) as engine:
        started = time.perf_counter()
        stuck = await engine.submit(text_request(cfg, "u", "hang"))
        fine = await engine.submit(text_request(cfg, "v", "fine"))
        with pytest.raises(GenerationFailed) as caught:
            await stuck.result()
        elapsed = time.perf_counter() - started
        ok = await fine.result()
        after = await (await engine.submit(text_request(cfg, "w", "after"))).result()
        record = await engine.get_request(stuck.id)
    assert caught.value.code == "timeout"
    assert "took too long" in describe_error(caught.value)
    assert 3.9 <= elapsed < 12  # the pair timed out, then the stuck job alone
    assert pipe.calls[:3] == [2, 1, 1]
    assert ok.files["ogg"].is_file() and after.files["ogg"].is_file()
    assert record is not None and (record.status, record.reason) == ("failed", "timeout")


class Refusing:
    """Refuses one prompt the way the pipeline refuses unusable input, or exits."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def run(self, inputs: Any, options: Any, progress: Any = None) -> Any:
        prompts = {i.prompt for i in inputs}
        if "refuse" in prompts:
            raise BadRequest("no caption model for images", code="bad_option")
        if "exit" in prompts:
            raise SystemExit(3)
        return self.inner.run(inputs, options, progress)


async def test_user_facing_refusals_reach_the_user_and_exits_do_not_stop_the_worker(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"max_batch": 3, "max_wait_ms": 1000})
    async with running_engine(cfg, Refusing(tiny_pipeline)) as engine:
        handles = [await engine.submit(text_request(cfg, f"u{i}", p))
                   for i, p in enumerate(("refuse", "exit", "fine"))]
        outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
        refused = await engine.get_request(handles[0].id)
    assert isinstance(outcomes[0], BadRequest) and outcomes[0].code == "bad_option"
    assert isinstance(outcomes[1], GenerationFailed) and outcomes[1].code == "failed"
    assert not isinstance(outcomes[2], BaseException) and outcomes[2].prompt == "fine"
    assert refused is not None and (refused.status, refused.reason) == ("failed", "bad_option")


class Stubborn:
    """Ignores cancellation for a while (no progress callbacks), then gives up."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.threads: list[str] = []

    def run(self, inputs: Any, options: Any, progress: Any = None) -> Any:
        self.threads.append(threading.current_thread().name)
        if inputs[0].prompt == "stubborn":
            time.sleep(2.5)
            raise RuntimeError("gave up")
        return self.inner.run(inputs, options, progress)


async def test_a_thread_that_ignores_cancellation_is_replaced(tmp_path: Path,
                                                              tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"job_timeout_s": 1.0, "max_batch": 1})
    pipe = Stubborn(tiny_pipeline)
    async with running_engine(cfg, pipe) as engine:
        engine.transport.runner.grace_s = 0.3
        stuck = await engine.submit(text_request(cfg, "u", "stubborn"))
        with pytest.raises(GenerationFailed, match="timed out"):
            await stuck.result()
        done = await (await engine.submit(text_request(cfg, "v", "fine"))).result()
    assert done.files["ogg"].is_file()
    assert len(set(pipe.threads)) == 2  # the stuck thread was left behind


async def test_models_that_fail_to_load_fail_the_batch_and_load_again_later(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    attempts: list[str] = []

    def factory() -> Any:
        attempts.append(threading.current_thread().name)
        if len(attempts) == 1:
            raise ModelMissingError("weights missing; run `sonify download`")
        return tiny_pipeline

    request_log = await RequestLog.open(cfg.database_url)
    engine = local_engine(cfg, request_log, pipeline_factory=factory)
    await engine.start()
    try:
        first = await engine.submit(text_request(cfg, "u", "a"))
        with pytest.raises(GenerationFailed):
            await first.result()
        second = await (await engine.submit(text_request(cfg, "u", "b"))).result()
        third = await (await engine.submit(text_request(cfg, "u", "c"))).result()
        assert second.files["ogg"].is_file() and third.files["ogg"].is_file()
        # Loaded lazily, in the model thread, and kept once it worked.
        assert len(attempts) == 2
        assert all(name.startswith("sonify-model") for name in attempts)
    finally:
        await engine.stop(5)
        await request_log.close()


async def test_shutdown_finishes_the_batch_and_keeps_the_rest_for_next_start(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"max_batch": 1})
    request_log, engine, gate = await gated_engine(cfg, tiny_pipeline)
    running = await engine.submit(image_request(cfg, "a", picture(1)))
    await wait_for(running, Started)
    waiting = [await engine.submit(image_request(cfg, "b", picture(2), reply_context={"m": 5})),
               await engine.submit(text_request(cfg, "c", "waves"))]
    stopping = asyncio.create_task(engine.stop(30))
    await asyncio.sleep(0.05)
    with pytest.raises(ShuttingDown):
        await engine.submit(text_request(cfg, "d", "late"))
    gate.set()
    await stopping
    assert (await running.result()).files["ogg"].is_file()
    for handle in waiting:
        event = events_of(handle)[-1]
        assert isinstance(event, Failed) and event.error.code == "shutting_down"
        assert event.error.params["resumes"] is True
        record = await request_log.get(handle.id)
        assert record is not None and record.status == "queued"
    assert (cfg.data_dir / "spool" / f"{waiting[0].id}.png").exists()
    await request_log.close()

    request_log, engine, got, _ = await restarted_engine(cfg, tiny_pipeline)
    try:
        assert sorted(h.id for h in got) == sorted(h.id for h in waiting)
        results = {h.id: await asyncio.wait_for(h.result(), 30) for h in got}
        assert all(r.files["ogg"].is_file() for r in results.values())
        by_id = {h.id: h for h in got}
        assert by_id[waiting[0].id].request.reply_context == {"m": 5}
        assert results[waiting[1].id].prompt == "waves"
        assert {(await request_log.get(i)).status for i in results} == {"done"}  # type: ignore[union-attr]
        assert not any((cfg.data_dir / "spool").iterdir())
    finally:
        await engine.stop(5)
        await request_log.close()


async def test_recovery_interrupts_what_cannot_be_rerun(tmp_path: Path,
                                                        tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"max_batch": 1})
    request_log, engine, gate = await gated_engine(cfg, tiny_pipeline)
    busy = await engine.submit(text_request(cfg, "z", "busy"))
    await wait_for(busy, Started)
    lost = await engine.submit(image_request(cfg, "a", picture(5), reply_context={"chat": 1}))
    # A platform no adapter of this run serves: one process, so nobody else will answer it.
    orphan = await engine.submit(text_request(cfg, "b", "owls", platform="discord"))
    await engine.stop(0.1)  # all three stay unfinished in the request log
    gate.set()
    await request_log.close()
    (cfg.data_dir / "spool" / f"{lost.id}.png").unlink()

    request_log, engine, got, _ = await restarted_engine(cfg, tiny_pipeline)
    try:
        handles = {h.id: h for h in got}
        assert set(handles) == {busy.id, lost.id}
        assert (await handles[busy.id].result()).prompt == "busy"
        handle = handles[lost.id]
        assert handle.request.reply_context == {"chat": 1}
        with pytest.raises(GenerationFailed) as caught:
            await handle.result()
        assert caught.value.code == "interrupted"
        assert "restarted" in describe_error(caught.value)
        assert (await request_log.get(lost.id)).status == "interrupted"  # type: ignore[union-attr]
        assert (await request_log.get(orphan.id)).status == "interrupted"  # type: ignore[union-attr]
        assert await request_log.unfinished() == []
    finally:
        await engine.stop(5)
        await request_log.close()
