"""The limits and the queue bound, counted the same way on both backends, and fair turns."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from core.errors import ImageRejected, QueueFull, RateLimited
from core.i18n import describe_error
from core.jobs.events import Started
from core.records import RequestRecord
from tests.core.jobs.contract.harness import PLATFORM, Backend, fetch_request
from tests.core.jobs.engine_support import WrappedPipeline, text_request, wait_for


async def test_jobs_at_once_per_user_with_admins_and_extra_pictures_exempt(
        backend: Backend, tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = backend.config(jobs={"per_user_concurrent": 2, "max_batch": 1})
    async with backend.running(cfg, WrappedPipeline(tiny_pipeline, gate=gate)) as service:
        engine = service.engine
        mine = [await engine.submit(text_request(cfg, "ann", f"p{i}")) for i in range(2)]
        await wait_for(mine[0], Started)
        with pytest.raises(RateLimited) as caught:
            await engine.submit(text_request(cfg, "ann", "p2"))
        assert caught.value.code == "too_many_running"
        assert 1 <= caught.value.params["retry_after_s"] <= 60
        assert "Try again in about" in describe_error(caught.value)
        # Other users, admins and a message's further pictures are not held back.
        other = await engine.submit(text_request(cfg, "ben", "q"))
        boss = [await engine.submit(text_request(cfg, "ann", f"a{i}", admin=True))
                for i in range(2)]
        extra = await engine.submit(text_request(cfg, "ann", "pictured", extra_picture=True))
        gate.set()
        await asyncio.wait_for(asyncio.gather(*(h.result() for h in
                                                [*mine, other, *boss, extra])), 60)
        # Answered jobs free their slots.
        later = await engine.submit(text_request(cfg, "ann", "p3"))
        await asyncio.wait_for(later.result(), 60)
        assert await service.request_log.unfinished() == []


async def test_the_hourly_limit_counts_the_log_and_says_when_to_retry(
        backend: Backend, tiny_pipeline: Any) -> None:
    cfg = backend.config(jobs={"per_user_per_hour": 3})
    now = time.time()
    async with backend.running(cfg, tiny_pipeline) as service:
        log = service.request_log
        # Rows of an earlier run count: one an hour old does not, a refusal does not.
        for n, (age, status) in enumerate([(3700, "done"), (1800, "done"), (60, "rejected")]):
            await log.insert(RequestRecord(id=f"old{n}", platform=PLATFORM, user_id="cat",
                                           chat_id="c", source_kind="text", status=status,
                                           created_at=now - age, finished_at=now - age))
        first = await service.engine.submit(text_request(cfg, "cat", "purr", seed=1))
        await asyncio.wait_for(first.result(), 60)
        # A cache hit counts for the hour (it is an answer), though it holds no job slot.
        hit = await service.engine.submit(text_request(cfg, "cat", "purr", seed=1))
        assert (await hit.result()).cache_hit
        with pytest.raises(RateLimited) as caught:
            await service.engine.submit(text_request(cfg, "cat", "hiss"))
        rows = await log.rows_since(now - 10)
    assert caught.value.code == "hourly_limit"
    # The oldest counted request (30 minutes ago) leaves the hour in about 30 minutes.
    assert 1790 <= caught.value.params["retry_after_s"] <= 1801
    assert "Try again in 30 min" in describe_error(caught.value)
    assert [(r.status, r.reason) for r in rows if r.status == "rejected"] == [
        ("rejected", "hourly_limit")]


async def test_a_received_request_holds_a_slot_and_a_place_until_it_is_refused(
        backend: Backend, tiny_pipeline: Any) -> None:
    """The cheap limits say no before any picture is fetched."""
    cfg = backend.config(jobs={"max_queue": 2, "per_user_concurrent": 1})
    async with backend.running(cfg, tiny_pipeline) as service:
        engine = service.engine
        ann = await engine.receive(fetch_request(cfg, "ann", n=1))
        with pytest.raises(RateLimited):
            await engine.receive(fetch_request(cfg, "ann", n=2))
        await engine.receive(fetch_request(cfg, "bob", n=3))
        with pytest.raises(QueueFull):
            await engine.receive(fetch_request(cfg, "cy", n=4))
        await engine.refuse(ann, ImageRejected("not a picture", code="not_image"))
        await engine.receive(fetch_request(cfg, "cy", n=5))  # ann's place is free again
        rows = {(r.user_id, r.status, r.reason, r.delivery)
                for r in await service.request_log.rows_since(0)}
    assert rows == {("ann", "rejected", "not_image", "owed"),  # the apology is still owed
                    ("ann", "rejected", "too_many_running", None),
                    ("bob", "received", None, "owed"),
                    ("cy", "rejected", "busy", None),
                    ("cy", "received", None, "owed")}


async def test_turns_alternate_between_users(backend: Backend, tiny_pipeline: Any) -> None:
    """One user's many jobs do not hold back another's first: a newcomer's job goes after
    at most one job of each user ahead of it."""
    gate = threading.Event()
    cfg = backend.config(jobs={"max_batch": 1, "per_user_concurrent": 5})
    async with backend.running(cfg, WrappedPipeline(tiny_pipeline, gate=gate)) as service:
        engine = service.engine
        first = await engine.submit(text_request(cfg, "ann", "ann 0"))
        await wait_for(first, Started)
        await service.until_status(first.id, "running")
        later = [await engine.submit(text_request(cfg, "ann", f"ann {n}")) for n in (1, 2)]
        later.append(await engine.submit(text_request(cfg, "bob", "bob 0")))
        gate.set()
        await asyncio.wait_for(asyncio.gather(*(h.result() for h in [first, *later])), 60)
        rows = [await service.request_log.get(h.id) for h in [first, *later]]
    order = [r.prompt for r in sorted((r for r in rows if r is not None),
                                      key=lambda r: r.started_at or 0.0)]
    assert order == ["ann 0", "ann 1", "bob 0", "ann 2"]
