"""The job engine with the tiny models: batching, events, identical results, cache, de-dup."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from core.jobs.engine import Engine
from core.jobs.events import Done, Progress, Queued, Started
from core.services import Services
from tests.conftest import make_config
from tests.core.jobs.engine_support import (
    WrappedPipeline,
    events_of,
    image_request,
    picture,
    running_engine,
    text_request,
    wait_for,
)


async def rows(engine: Engine, ids: list[str]) -> dict[str, Any]:
    out = {}
    for request_id in ids:
        record = await engine.get_request(request_id)
        assert record is not None, f"no row for {request_id}"
        out[request_id] = record
    return out


def decoded(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate in (16_000, 48_000)
    return audio


async def test_twenty_jobs_from_five_users_are_batched_and_all_answered(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"max_batch": 4, "per_user_concurrent": 4})
    pipe = WrappedPipeline(tiny_pipeline)
    async with running_engine(cfg, pipe) as engine:
        requests = [image_request(cfg, f"user{i % 5}", picture(i)) for i in range(20)]
        handles = await asyncio.gather(*(engine.submit(r) for r in requests))
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
        records = await rows(engine, [h.id for h in handles])

    assert len({h.id for h in handles}) == 20
    assert all(len(h.id) <= 20 for h in handles)
    for handle, result in zip(handles, results, strict=True):
        assert result.request_id == handle.id
        assert not result.cache_hit
        assert set(result.files) == {"ogg", "mp3"}
        assert abs(result.duration_s - 1.0) < 0.1
        assert len(decoded(result.files["ogg"])) > 0
        kinds = [type(e) for e in events_of(handle)]
        assert kinds[0] is Queued and kinds[-1] is Done
        assert kinds.index(Started) < kinds.index(Progress) < kinds.index(Done)
    # Batches formed: the model saw calls of more than one input, and the log says so.
    assert sum(pipe.calls) == 20 and max(pipe.calls) > 1
    assert all(r.status == "done" for r in records.values())
    assert max(r.batch_size for r in records.values()) > 1
    for r in records.values():
        assert r.started_at is not None and r.finished_at is not None
        assert r.queue_wait_s is not None and r.queue_wait_s >= 0
        assert r.total_s is not None and r.total_s >= r.queue_wait_s
        assert r.encode_s is not None and r.sound_s is not None
        assert r.image_sha256 and r.seed is not None and r.caption is not None
    # Images are only spooled while their job runs.
    assert not any((cfg.data_dir / "spool").iterdir())


async def test_batched_result_equals_the_job_run_alone(tmp_path: Path, tiny_pipeline: Any) -> None:
    seeds = [11, 22, 33]
    pics = [picture(100 + i) for i in range(3)]
    together = make_config(tmp_path / "a", jobs={"max_batch": 3, "max_wait_ms": 2000,
                                                 "per_user_concurrent": 3})
    alone = make_config(tmp_path / "b", jobs={"max_batch": 1, "per_user_concurrent": 3})
    outputs = {}
    for name, cfg in (("together", together), ("alone", alone)):
        async with running_engine(cfg, tiny_pipeline) as engine:
            handles = [await engine.submit(image_request(cfg, "u", p, seed=s))
                       for p, s in zip(pics, seeds, strict=True)]
            outputs[name] = [await h.result() for h in handles]
    assert [r.batch_size for r in outputs["together"]] == [3, 3, 3]
    assert [r.batch_size for r in outputs["alone"]] == [1, 1, 1]
    for a, b in zip(outputs["together"], outputs["alone"], strict=True):
        assert (a.caption, a.prompt, a.seed) == (b.caption, b.prompt, b.seed)
        np.testing.assert_allclose(decoded(a.files["ogg"]), decoded(b.files["ogg"]), atol=2e-3)
    # Different seeds really give different clips, so the comparison above means something.
    first, second = (decoded(r.files["ogg"]) for r in outputs["alone"][:2])
    assert np.max(np.abs(first - second)) > 0.05


async def test_repeated_image_is_served_from_the_cache_without_the_models(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    pipe = WrappedPipeline(tiny_pipeline)
    async with running_engine(cfg, pipe) as engine:
        first = await (await engine.submit(image_request(cfg, "alice", picture(7)))).result()
        calls = list(pipe.calls)
        again = await engine.submit(image_request(cfg, "bob", picture(7)))
        assert again.finished  # answered at once
        second = await again.result()
        assert pipe.calls == calls  # no model call
        assert second.cache_hit and not first.cache_hit
        assert second.request_id != first.request_id
        assert (second.caption, second.prompt, second.seed) == (first.caption, first.prompt,
                                                               first.seed)
        assert second.files["ogg"].read_bytes() == first.files["ogg"].read_bytes()
        record = await engine.get_request(second.request_id)
        assert record is not None and record.status == "done" and record.cache_hit
        # An explicit seed is a different clip; so is a text job with a fresh random seed.
        seeded = await (await engine.submit(image_request(cfg, "bob", picture(7), seed=5))
                        ).result()
        retake = await (await engine.submit(text_request(cfg, "bob", first.caption or "x"))
                        ).result()
        assert not seeded.cache_hit and not retake.cache_hit
        assert len(pipe.calls) == len(calls) + 2
        # ...but the same text with the same explicit seed is a hit.
        again_seeded = await (await engine.submit(image_request(cfg, "carol", picture(7),
                                                                seed=5))).result()
        assert again_seeded.cache_hit and again_seeded.seed == 5


async def test_identical_requests_in_flight_are_computed_once(tmp_path: Path,
                                                              tiny_pipeline: Any) -> None:
    # The batch waits long enough for all three to arrive while it is queued, even on a
    # loaded machine: a rider that joins a job already running starts with `Started`.
    cfg = make_config(tmp_path, jobs={"max_wait_ms": 2000})
    pipe = WrappedPipeline(tiny_pipeline)
    async with running_engine(cfg, pipe) as engine:
        handles = await asyncio.gather(*(engine.submit(image_request(cfg, f"u{i}", picture(9)))
                                         for i in range(3)))
        results = await asyncio.gather(*(h.result() for h in handles))
        records = await rows(engine, [h.id for h in handles])
    assert sum(pipe.calls) == 1
    assert sorted(r.cache_hit for r in results) == [False, True, True]
    assert len({r.files["ogg"] for r in results}) == 1
    assert len({r.request_id for r in results}) == 3
    assert all(r.status == "done" and r.caption == results[0].caption for r in records.values())
    for handle in handles:  # riders see the whole story too
        assert isinstance(events_of(handle)[0], Queued)
        assert any(isinstance(e, Started) for e in events_of(handle))


async def test_event_loop_keeps_ticking_while_a_batch_renders(tmp_path: Path,
                                                              tiny_pipeline: Any) -> None:
    """The model call runs off the event loop. The call is held at a gate until the loop has
    ticked ten times while the call was in progress (no wall-clock bound that a fast machine
    could miss), then the real render runs and the loop never stalls for 0.25 s."""
    import threading

    gate = threading.Event()
    cfg = make_config(tmp_path, generation={"seconds": 4.0, "steps": 4})
    pipe = WrappedPipeline(tiny_pipeline, gate=gate)
    ticks: list[float] = []
    ticks_in_call = 0
    ticked_in_call = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal ticks_in_call
        while True:
            ticks.append(time.perf_counter())
            if pipe.calls and not gate.is_set():  # the model thread is inside the call
                ticks_in_call += 1
                if ticks_in_call >= 10:
                    ticked_in_call.set()
            await asyncio.sleep(0.01)

    async with running_engine(cfg, pipe) as engine:
        beat = asyncio.create_task(heartbeat())
        handles = [await engine.submit(image_request(cfg, f"u{i}", picture(200 + i)))
                   for i in range(2)]
        await asyncio.wait_for(ticked_in_call.wait(), 30)
        render_start = time.perf_counter()
        gate.set()
        await asyncio.gather(*(h.result() for h in handles))
        render_end = time.perf_counter()
        beat.cancel()
    during = [t for t in ticks if render_start <= t <= render_end]
    gaps = np.diff([render_start, *during, render_end])
    assert gaps.max() < 0.25, f"event loop stalled for {gaps.max():.2f}s during a render"
    assert pipe.thread_names and all(n.startswith("sonify-model") for n in pipe.thread_names)


async def test_queued_positions_follow_the_queue(tmp_path: Path, tiny_pipeline: Any) -> None:
    import threading

    gate = threading.Event()
    cfg = make_config(tmp_path, jobs={"max_batch": 1})
    async with running_engine(cfg, WrappedPipeline(tiny_pipeline, gate=gate)) as engine:
        busy = await engine.submit(text_request(cfg, "z", "first"))
        await wait_for(busy, Started)
        waiting = [await engine.submit(text_request(cfg, f"u{i}", f"p{i}")) for i in range(3)]
        assert [events_of(h)[-1] for h in waiting] == [Queued(1), Queued(2), Queued(3)]
        assert engine.queue_length() == 3
        gate.set()
        await asyncio.gather(*(h.result() for h in waiting))
    last = waiting[-1]
    assert [e for e in events_of(last) if isinstance(e, Queued)] == [Queued(3), Queued(2),
                                                                     Queued(1)]


async def test_services_run_a_job_and_report_stats(tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    services = await Services.create(cfg, pipeline_factory=lambda: tiny_pipeline)
    try:
        handle = await services.engine.submit(image_request(cfg, "u1", picture(1)))
        result = await handle.result()
        assert result.files["ogg"].is_file()
        rejected = await services.engine.reject(platform="telegram", user_id="u2", chat_id="c",
                                                source_kind="url", error=_rejection())
        record = await services.engine.get_request(rejected)
        assert record is not None and (record.status, record.reason) == ("rejected", "bad_url")
        text, png = await services.stats_report()
        assert "Today: 2 requests" in text and "done 1" in text and "rejected 1" in text
        assert png.startswith(b"\x89PNG")
    finally:
        await services.close()


def _rejection() -> Any:
    from core.errors import ImageRejected

    return ImageRejected("bad link", code="bad_url")


async def test_done_events_carry_progress_from_the_diffusion_steps(tmp_path: Path,
                                                                   tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, generation={"steps": 3})
    async with running_engine(cfg, tiny_pipeline) as engine:
        handle = await engine.submit(text_request(cfg, "u", "rain on a tin roof", seed=1))
        result = await handle.result()
    steps = [e for e in events_of(handle) if isinstance(e, Progress)]
    assert steps and steps[-1].step == steps[-1].total
    assert result.prompt == "rain on a tin roof" and result.seed == 1
