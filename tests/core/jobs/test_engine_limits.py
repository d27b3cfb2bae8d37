"""Back-pressure and fairness: per-user limits, the queue bound, round-robin service."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core.errors import BadRequest, QueueFull, RateLimited, ShuttingDown
from core.i18n import describe_error
from core.jobs.dispatch import FIRST_BATCH_GUESS_S
from core.jobs.events import Queued, Started
from core.options import GenerationOptions
from core.storage.request_log import RequestRecord
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


async def test_concurrent_limit_per_user_with_admin_exemption(tmp_path: Path,
                                                              tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = make_config(tmp_path, jobs={"per_user_concurrent": 2, "max_batch": 1})
    async with running_engine(cfg, WrappedPipeline(tiny_pipeline, gate=gate)) as engine:
        mine = [await engine.submit(text_request(cfg, "ann", f"p{i}")) for i in range(2)]
        await wait_for(mine[0], Started)
        with pytest.raises(RateLimited) as caught:
            await engine.submit(text_request(cfg, "ann", "p2"))
        err = caught.value
        assert err.code == "too_many_running"
        assert 1 <= err.params["retry_after_s"] <= 60
        assert "Try again in about" in describe_error(err)
        # Other users and admins are not held back by ann's jobs.
        other = await engine.submit(text_request(cfg, "ben", "q"))
        boss = [await engine.submit(text_request(cfg, "ann", f"a{i}", admin=True))
                for i in range(3)]
        gate.set()
        await asyncio.gather(*(h.result() for h in [*mine, other, *boss]))
        # A finished job frees the slot.
        later = await engine.submit(text_request(cfg, "ann", "p3"))
        await later.result()
        record = await engine.request_log.unfinished()
    assert record == []


async def test_hourly_limit_counts_the_log_and_says_when_to_retry(tmp_path: Path,
                                                                  tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"per_user_per_hour": 3})
    now = time.time()
    async with running_engine(cfg, tiny_pipeline) as engine:
        # Three earlier requests of this user in the log (say, before a restart)...
        for i, age in enumerate((1800.0, 1000.0, 10.0)):
            await engine.request_log.insert(RequestRecord(
                id=f"old{i}", platform="test", user_id="cat", chat_id="c", source_kind="photo",
                status="done", created_at=now - age))
        # ...one older than an hour and one rejected, which do not count.
        await engine.request_log.insert(RequestRecord(id="ancient", platform="test", user_id="cat",
                                              chat_id="c", source_kind="photo", status="done",
                                              created_at=now - 4000))
        await engine.request_log.insert(RequestRecord(
            id="refused", platform="test", user_id="cat", chat_id="c", source_kind="photo",
            status="rejected", reason="busy", created_at=now - 500))
        with pytest.raises(RateLimited) as caught:
            await engine.submit(text_request(cfg, "cat", "meow"))
        assert caught.value.code == "hourly_limit"
        assert 1795 <= caught.value.params["retry_after_s"] <= 1802  # when the oldest ages out
        assert "Try again in 30 min" in describe_error(caught.value)
        # The refusal is logged as rejected, and does not count towards the limit itself.
        assert (await engine.request_log.user_window("test", "cat", now - 3600))[0] == 3
        # Same user on another platform is another user; admins are exempt.
        await (await engine.submit(text_request(cfg, "cat", "meow", platform="other"))).result()
        await (await engine.submit(text_request(cfg, "cat", "meow", admin=True))).result()
        rejected = [r for r in await engine.request_log.rows_since(now - 60, ["status", "reason"])
                    if r[0] == "rejected"]
    assert rejected == [("rejected", "hourly_limit")]


async def test_full_queue_says_busy_with_an_estimate(tmp_path: Path, tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = make_config(tmp_path, jobs={"max_queue": 2, "max_batch": 1})
    async with running_engine(cfg, WrappedPipeline(tiny_pipeline, gate=gate)) as engine:
        running = await engine.submit(text_request(cfg, "u0", "p0"))
        await wait_for(running, Started)
        queued = [await engine.submit(text_request(cfg, f"u{i}", f"p{i}")) for i in (1, 2)]
        with pytest.raises(QueueFull) as caught:
            await engine.submit(text_request(cfg, "u3", "p3"))
        assert caught.value.code == "busy"
        retry = caught.value.params["retry_after_s"]
        assert 1 <= retry <= 60
        assert "try again in about" in describe_error(caught.value)
        gate.set()
        await asyncio.gather(*(h.result() for h in [running, *queued]))
        # Once batches are timed, the estimate follows them instead of the first guess.
        assert engine.transport.dispatcher.estimate(2) < 2 * FIRST_BATCH_GUESS_S


async def test_round_robin_across_users_within_the_queue(tmp_path: Path,
                                                         tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = make_config(tmp_path, jobs={"max_batch": 2, "per_user_concurrent": 10})
    pipe = WrappedPipeline(tiny_pipeline, gate=gate)
    async with running_engine(cfg, pipe) as engine:
        blocker = await engine.submit(text_request(cfg, "zed", "busy", seed=900))
        await wait_for(blocker, Started)
        greedy = [await engine.submit(text_request(cfg, "ann", f"a{i}", seed=100 + i))
                  for i in range(4)]
        bob = await engine.submit(text_request(cfg, "bob", "b", seed=200))
        cat = await engine.submit(text_request(cfg, "cat", "c", seed=300))
        # Newcomers go ahead of ann's second job, not behind all of ann's jobs.
        assert events_of(bob)[-1] == Queued(2)
        assert events_of(cat)[-1] == Queued(3)
        assert [events_of(h)[-1] for h in greedy] == [Queued(1), Queued(4), Queued(5),
                                                      Queued(6)]
        gate.set()
        await asyncio.gather(*(h.result() for h in [blocker, *greedy, bob, cat]))
    assert pipe.seeds == [[900], [100, 200], [300, 101], [102, 103]]


async def test_jobs_with_different_options_go_in_separate_batches(tmp_path: Path,
                                                                  tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = make_config(tmp_path, jobs={"max_batch": 4, "per_user_concurrent": 10})
    pipe = WrappedPipeline(tiny_pipeline, gate=gate)
    async with running_engine(cfg, pipe) as engine:
        blocker = await engine.submit(text_request(cfg, "zed", "busy", seed=1))
        await wait_for(blocker, Started)
        short = [await engine.submit(image_request(cfg, "u", picture(i), seed=10 + i))
                 for i in range(2)]
        long = [await engine.submit(image_request(cfg, "v", picture(i), seed=20 + i,
                                                  seconds=2.0)) for i in range(2)]
        gate.set()
        results = await asyncio.gather(*(h.result() for h in [*short, *long]))
    # Service order is u, v, u, v; each batch takes the compatible jobs in that order.
    assert pipe.seeds[1:] == [[10, 11], [20, 21]]
    assert [round(r.duration_s) for r in results] == [1, 1, 2, 2]


async def test_bad_requests_and_shutdown_are_refused(tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    async with running_engine(cfg, tiny_pipeline) as engine:
        with pytest.raises(BadRequest) as caught:
            await engine.submit(text_request(cfg, "u", "x", seed=-1))
        assert caught.value.code == "bad_seed"
        too_long = image_request(cfg, "u", picture(1))
        too_long.options = GenerationOptions(seconds=99.0)
        with pytest.raises(BadRequest) as caught:
            await engine.submit(too_long)
        assert caught.value.code == "bad_seconds"
        with pytest.raises(BadRequest):
            await engine.submit(text_request(cfg, "u", "   "))
        await engine.stop(5)
        with pytest.raises(ShuttingDown) as stopped:
            await engine.submit(text_request(cfg, "u", "x"))
        assert stopped.value.code == "shutting_down"
        rows = await engine.request_log.rows_since(0, ["status", "reason"])
    # Every refusal the engine raises is a row, the one during shutdown included.
    assert [tuple(r) for r in rows] == [("rejected", "bad_seed"), ("rejected", "bad_seconds"),
                                        ("rejected", "bad_option"),
                                        ("rejected", "shutting_down")]
