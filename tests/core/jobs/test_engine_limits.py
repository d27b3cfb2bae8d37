"""Back-pressure and fairness: per-user limits, the queue bound, round-robin service."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from core.errors import QueueFull
from core.i18n import describe_error
from core.jobs.dispatch import FIRST_BATCH_GUESS_S
from core.jobs.events import Queued, Started
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
