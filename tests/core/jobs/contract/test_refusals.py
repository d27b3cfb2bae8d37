"""Every refusal is a row, and a platform's update is recorded once (dedupe keys)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from core.errors import (
    BadRequest,
    DuplicateRequest,
    ImageRejected,
    QueueFull,
    RateLimited,
    ShuttingDown,
)
from core.jobs.events import Started
from core.options import GenerationOptions
from core.user_text import WORDS_MAX_CHARS
from tests.core.jobs.contract.harness import PLATFORM, Backend, fetch_request
from tests.core.jobs.engine_support import (
    WrappedPipeline,
    image_request,
    picture,
    text_request,
    wait_for,
)


async def test_every_refusal_is_a_row_with_its_reason(backend: Backend,
                                                      tiny_pipeline: Any) -> None:
    gate = threading.Event()
    cfg = backend.config(jobs={"per_user_concurrent": 1, "max_queue": 3, "max_batch": 1})
    async with backend.running(cfg, WrappedPipeline(tiny_pipeline, gate=gate)) as service:
        engine = service.engine
        busy = await engine.submit(text_request(cfg, "ann", "a drum", answer_owed=True))
        await wait_for(busy, Started)
        await service.until_status(busy.id, "running")  # rendering: no queue place
        fetching = await engine.receive(fetch_request(cfg, "ann-2"))  # a place
        with pytest.raises(BadRequest):  # before any count is read
            await engine.submit(text_request(cfg, "bob", "bad \ud800 words"))
        with pytest.raises(RateLimited) as running:
            await engine.submit(text_request(cfg, "ann", "another drum"))
        assert running.value.code == "too_many_running"
        assert 1 <= running.value.params["retry_after_s"] <= 60
        await engine.submit(text_request(cfg, "cy", "a bell"))  # a place
        await engine.receive(fetch_request(cfg, "dee"))  # the last place
        with pytest.raises(QueueFull) as full:
            await engine.submit(text_request(cfg, "eve", "a gong"))
        assert full.value.code == "busy" and full.value.params["retry_after_s"] >= 1
        told = await engine.reject(platform=PLATFORM, user_id="fay", chat_id="chat-fay",
                                   source_kind="url", lang="es",
                                   error=ImageRejected("no", code="bad_url"))
        await engine.refuse(fetching, ImageRejected("not a picture", code="not_image"))
        gate.set()
        await engine.stop(30)
        with pytest.raises(ShuttingDown):
            await engine.submit(text_request(cfg, "gus", "late"))
        rows = {r.user_id: r for r in await service.request_log.rows_since(0)
                if r.status == "rejected"}

    reasons = {user: row.reason for user, row in rows.items()}
    assert reasons == {"bob": "words_invalid", "ann": "too_many_running", "eve": "busy",
                       "fay": "bad_url", "ann-2": "not_image", "gus": "shutting_down"}
    # Refused at the door: answered at once (no answer owed later), nothing to keep.
    for user in ("ann", "eve", "fay", "gus"):
        row = rows[user]
        assert (row.total_s, row.started_at, row.delivery, row.reply_context) == (
            0.0, None, None, {})
        assert row.finished_at == row.created_at
    assert rows["fay"].id == told and (rows["fay"].lang, rows["fay"].source_kind) == (
        "es", "url")
    # Refused after it was recorded: its apology is still owed, its context kept.
    assert (rows["ann-2"].delivery, rows["ann-2"].reply_context) == ("owed", {"where": "ann-2"})
    assert rows["ann-2"].id == fetching.id
    # What was asked is kept with the refusal (the refused seed is not a seed).
    assert (rows["eve"].prompt, rows["eve"].seed is not None) == ("a gong", True)


async def test_bad_input_is_refused_with_what_was_asked(backend: Backend,
                                                       tiny_pipeline: Any) -> None:
    cfg = backend.config()
    async with backend.running(cfg, tiny_pipeline) as service:
        engine = service.engine
        with pytest.raises(BadRequest) as seed:
            await engine.submit(image_request(cfg, "dan", picture(2), seed=-5,
                                              reply_context={"message_id": 1}))
        too_long = text_request(cfg, "eve", "a long hum")
        too_long.options = GenerationOptions(seconds=99.0)
        with pytest.raises(BadRequest) as seconds:
            await engine.submit(too_long)
        with pytest.raises(BadRequest) as blank:
            await engine.submit(text_request(cfg, "fay", "   "))
        with pytest.raises(BadRequest) as wordy:  # one bound for the words of every platform
            await engine.submit(text_request(cfg, "gil", "a" * (WORDS_MAX_CHARS + 1)))
        await engine.submit(text_request(cfg, "hal", "b" * WORDS_MAX_CHARS))
        rows = {r.user_id: r for r in await service.request_log.rows_since(0)}
    assert (seed.value.code, seconds.value.code, blank.value.code, wordy.value.code) == (
        "bad_seed", "bad_seconds", "bad_option", "words_too_long")
    assert {user: (r.status, r.reason) for user, r in rows.items() if user != "hal"} == {
        "dan": ("rejected", "bad_seed"), "eve": ("rejected", "bad_seconds"),
        "fay": ("rejected", "bad_option"), "gil": ("rejected", "words_too_long")}
    dan = rows["dan"]
    assert (dan.seed, dan.image_sha256, dan.reply_context) == (None, picture(2).sha256, {})
    assert rows["eve"].prompt == "a long hum"


async def test_an_update_delivered_again_is_recorded_and_answered_once(
        backend: Backend, tiny_pipeline: Any) -> None:
    cfg = backend.config()
    async with backend.running(cfg, tiny_pipeline) as service:
        engine = service.engine
        first = await engine.receive(fetch_request(cfg, "ann", key="upd:7"))
        again = await engine.receive(fetch_request(cfg, "ann", key="upd:7"))
        assert not first.duplicate
        assert again.duplicate and (again.id, again.seed) == (first.id, first.seed)
        await engine.submit(text_request(cfg, "bob", "rain", dedupe_key="upd:8"))
        with pytest.raises(DuplicateRequest) as dup:
            await engine.submit(text_request(cfg, "bob", "rain", dedupe_key="upd:8"))
        refused = ImageRejected("no picture", code="no_image")
        await engine.reject(platform=PLATFORM, user_id="cy", chat_id="c", source_kind="photo",
                            error=refused, dedupe_key="upd:9")
        with pytest.raises(DuplicateRequest):
            await engine.reject(platform=PLATFORM, user_id="cy", chat_id="c",
                                source_kind="photo", error=refused, dedupe_key="upd:9")
        # Even a request that a limit would refuse now is known as the one recorded before.
        with pytest.raises(DuplicateRequest):
            await engine.submit(text_request(cfg, "bob", "rain", dedupe_key="upd:9"))
        rows = await service.request_log.rows_since(0)
    assert sorted(r.dedupe_key or "" for r in rows) == ["upd:7", "upd:8", "upd:9"]
    assert dup.value.request_id == next(r.id for r in rows if r.dedupe_key == "upd:8")
