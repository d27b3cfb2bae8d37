"""Answers: riders and cache hits with rows of their own, owed answers until sent, a stop
that hands jobs back to the next start, and seeds that stay what the row says."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from core.errors import ImageRejected, ShuttingDown
from core.jobs.events import Done, Failed, Started
from core.records import RequestRecord
from tests.core.jobs.contract.harness import PLATFORM, Backend, fetch_request, nothing_spooled
from tests.core.jobs.engine_support import (
    WrappedPipeline,
    events_of,
    image_request,
    picture,
    text_request,
    wait_for,
)


async def test_the_row_exists_before_the_picture_and_becomes_the_job(
        backend: Backend, tiny_pipeline: Any) -> None:
    cfg = backend.config()
    async with backend.running(cfg, tiny_pipeline) as service:
        engine = service.engine
        request = fetch_request(cfg, "ann", key="upd:1")
        receipt = await engine.receive(request)
        row = await engine.get_request(receipt.id)
        assert row is not None
        assert (row.status, row.source, row.dedupe_key, row.delivery, row.seed) == (
            "received", {"kind": "test", "n": 1}, "upd:1", "owed", receipt.seed)
        handle = await engine.submit(request.with_image(picture(1)), receipt=receipt)
        assert handle.id == receipt.id
        result = await asyncio.wait_for(handle.result(), 60)
        row = await engine.get_request(receipt.id)
    assert row is not None and (row.status, row.seed, row.delivery) == ("done", result.seed,
                                                                       "owed")
    assert row.image_sha256 == picture(1).sha256 and row.files


async def test_riders_and_cache_hits_are_answered_with_rows_of_their_own(
        backend: Backend, tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = backend.config()
    pipeline = WrappedPipeline(tiny_pipeline, gate=gate)
    async with backend.running(cfg, pipeline) as service:
        engine = service.engine
        leader = await engine.submit(image_request(cfg, "ann", picture(4), seed=3))
        await wait_for(leader, Started)
        rider = await engine.submit(image_request(cfg, "bob", picture(4), seed=3))
        gate.set()
        first = await asyncio.wait_for(leader.result(), 60)
        second = await asyncio.wait_for(rider.result(), 60)
        # Once it is done, the same again is a cache hit: answered at once, no render.
        hit = await asyncio.wait_for((await engine.submit(
            image_request(cfg, "cy", picture(4), seed=3))).result(), 60)
        rows = {h: await engine.get_request(h) for h in (leader.id, rider.id, hit.request_id)}
    assert sum(pipeline.calls) == 1  # one render answered all three
    assert len({leader.id, rider.id, hit.request_id}) == 3
    assert not first.cache_hit and second.cache_hit and hit.cache_hit
    assert second.caption == first.caption and hit.caption == first.caption
    assert second.files["ogg"].read_bytes() == first.files["ogg"].read_bytes()
    assert hit.files["ogg"].read_bytes() == first.files["ogg"].read_bytes()
    done = rows[leader.id]
    for request_id, expected_batch in ((rider.id, done.batch_size if done else 0),
                                       (hit.request_id, 0)):
        row = rows[request_id]
        assert row is not None and (row.status, row.cache_hit, row.batch_size) == (
            "done", True, expected_batch)
        assert row.caption == first.caption and row.seed == 3 and row.files == done.files  # type: ignore[union-attr]
        assert row.total_s is not None and row.queue_wait_s is not None
        assert (row.caption_s, row.sound_s, row.encode_s) == (0.0, 0.0, 0.0)  # no render
        assert row.started_at is not None and row.started_at >= row.created_at
    assert done is not None and (done.status, done.cache_hit, done.batch_size) == (
        "done", False, 1)


async def test_owed_answers_are_handed_back_until_sent(backend: Backend,
                                                       tiny_pipeline: Any) -> None:
    """Done, failed or refused rows whose answer was never marked sent come back after a
    restart, with the clip (rendered again if its files are gone) or the reason."""
    cfg = backend.config()
    service = await backend.start(cfg, tiny_pipeline)
    made = {}
    try:
        engine = service.engine
        for name in ("unsent", "sending", "sent", "lost"):
            handle = await engine.submit(text_request(cfg, name, f"the sound of {name}",
                                                      answer_owed=True))
            made[name] = await asyncio.wait_for(handle.result(), 60)
        await engine.mark_delivery(made["sending"].request_id, "sending")
        for state in ("sending", "sent"):
            await engine.mark_delivery(made["sent"].request_id, state)
        refused = await engine.receive(fetch_request(cfg, "ref"))
        await engine.refuse(refused, ImageRejected("not a picture", code="not_image"))
        lost = await engine.get_request(made["lost"].request_id)
        assert lost is not None
    finally:
        await service.stop()
    await backend.forget_clip(service, lost)  # the cache was emptied while the bot was down

    service, handed = await backend.restart(cfg, tiny_pipeline)
    try:
        got = {h.request.user_id: h for h in handed}
        assert set(got) == {"unsent", "sending", "lost", "ref"}
        for name in ("unsent", "sending"):
            event = got[name].last_event
            assert isinstance(event, Done) and event.result.caption == made[name].caption
            assert event.result.files["ogg"].is_file()
        again = await asyncio.wait_for(got["lost"].result(), 60)
        assert (again.seed, again.prompt) == (made["lost"].seed, made["lost"].prompt)
        assert all(p.is_file() for p in again.files.values())
        failed = got["ref"].last_event
        assert isinstance(failed, Failed) and failed.error.code == "not_image"
        for state in ("sending", "sent"):
            await service.engine.mark_delivery(got["ref"].id, state)
        row = await service.engine.get_request(got["ref"].id)
        assert row is not None and row.delivery == "sent"
    finally:
        await service.stop()


async def test_stop_hands_jobs_back_and_the_next_start_answers_them(
        backend: Backend, tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = backend.config(jobs={"max_batch": 1})
    service = await backend.start(cfg, WrappedPipeline(tiny_pipeline, gate=gate))
    try:
        engine = service.engine
        running = await engine.submit(text_request(cfg, "a", "slow", answer_owed=True))
        await wait_for(running, Started)
        waiting = [await engine.submit(text_request(cfg, "b", "waves", answer_owed=True,
                                                    reply_context={"m": 5})),
                   await engine.submit(image_request(cfg, "c", picture(2), answer_owed=True))]
        await engine.stop(0.2)  # shorter than the render: the running job is cut short too
        with pytest.raises(ShuttingDown):
            await engine.submit(text_request(cfg, "d", "late"))
        for handle in (running, *waiting):
            event = events_of(handle)[-1]
            assert isinstance(event, Failed) and isinstance(event.error, ShuttingDown)
            assert event.error.code == "shutting_down" and event.error.params["resumes"]
            row = await service.request_log.get(handle.id)
            assert row is not None and not row.finished  # answered after the next start
    finally:
        gate.set()
        await service.stop()

    service, handed = await backend.restart(cfg, tiny_pipeline)
    try:
        by_id = {h.id: h for h in handed}
        assert set(by_id) == {h.id for h in (running, *waiting)}
        results = {i: await asyncio.wait_for(h.result(), 60) for i, h in by_id.items()}
        assert results[running.id].prompt == "slow"
        assert by_id[waiting[0].id].request.reply_context == {"m": 5}
        assert all(r.files["ogg"].is_file() for r in results.values())
        rows = [await service.request_log.get(i) for i in by_id]
        assert {r.status for r in rows if r is not None} == {"done"}
        await nothing_spooled(backend, cfg)
    finally:
        await service.stop()


async def test_a_row_without_a_seed_gets_one_kept_seed_on_either_backend(
        backend: Backend, tiny_pipeline: Any) -> None:
    """Rows written by an older version may lack a seed: resumed, each gets a random one
    (not the same for all), written into its row before it renders."""
    cfg = backend.config()
    now = time.time()
    service = await backend.start(cfg, tiny_pipeline)
    try:
        for name in ("old-1", "old-2"):
            await service.request_log.insert(RequestRecord(
                id=name, platform=PLATFORM, user_id=name, chat_id="c", source_kind="text",
                status="received", created_at=now, prompt=f"the sound of {name}",
                options={"seconds": 1.0}, delivery="owed"))
    finally:
        await service.stop()
    service, handed = await backend.restart(cfg, tiny_pipeline)
    try:
        results = {h.id: await asyncio.wait_for(h.result(), 60) for h in handed}
        rows = {i: await service.request_log.get(i) for i in results}
    finally:
        await service.stop()
    assert set(results) == {"old-1", "old-2"}
    seeds = {i: row.seed for i, row in rows.items() if row is not None}
    assert all(seeds[i] == results[i].seed for i in results)
    assert seeds["old-1"] != seeds["old-2"]
