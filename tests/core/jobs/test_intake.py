"""The durable point: a request is a row before its picture is fetched, and every row that
owes an answer gets exactly one after any restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core.errors import DuplicateRequest, ImageRejected, QueueFull, RateLimited
from core.jobs.engine import Engine
from core.jobs.events import Done, Failed, JobHandle
from core.jobs.local import local_engine
from core.jobs.request import JobRequest, Receipt
from core.jobs.rows import received_request
from core.options import GenerationOptions
from core.storage.records import RequestRecord
from core.storage.request_log import RequestLog
from tests.conftest import make_config
from tests.core.jobs.engine_support import picture, running_engine, text_request


def fetch_request(config: Any, user: str, *, key: str | None = None, n: int = 1,
                  owed: bool = True) -> JobRequest:
    """A request whose picture is still to be fetched (as a chat adapter receives it)."""
    return JobRequest(platform="test", user_id=user, chat_id=f"chat-{user}",
                      source_kind="photo", options=GenerationOptions.from_config(
                          config.generation), source={"kind": "test", "n": n},
                      dedupe_key=key, answer_owed=owed, reply_context={"where": user})


async def test_the_row_exists_before_the_picture_and_becomes_the_job(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    async with running_engine(cfg, tiny_pipeline) as engine:
        request = fetch_request(cfg, "ann", key="upd:1")
        receipt = await engine.receive(request)
        row = await engine.get_request(receipt.id)
        assert row is not None
        assert (row.status, row.source, row.dedupe_key, row.delivery, row.seed) == (
            "received", {"kind": "test", "n": 1}, "upd:1", "owed", receipt.seed)
        handle = await engine.submit(request.with_image(picture(1)), receipt=receipt)
        assert handle.id == receipt.id
        result = await asyncio.wait_for(handle.result(), 30)
        row = await engine.get_request(receipt.id)
    assert row is not None and (row.status, row.seed, row.delivery) == ("done", result.seed,
                                                                       "owed")
    assert row.image_sha256 == picture(1).sha256 and row.files


async def test_a_redelivered_request_is_recorded_and_answered_once(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    async with running_engine(cfg, tiny_pipeline) as engine:
        first = await engine.receive(fetch_request(cfg, "ann", key="upd:7"))
        again = await engine.receive(fetch_request(cfg, "ann", key="upd:7"))
        assert again.duplicate and (again.id, again.seed) == (first.id, first.seed)
        assert not first.duplicate
        await engine.submit(text_request(cfg, "bob", "rain", dedupe_key="upd:8"))
        with pytest.raises(DuplicateRequest):
            await engine.submit(text_request(cfg, "bob", "rain", dedupe_key="upd:8"))
        refused = ImageRejected("no picture", code="no_image")
        await engine.reject(platform="test", user_id="cy", chat_id="c", source_kind="photo",
                            error=refused, dedupe_key="upd:9")
        with pytest.raises(DuplicateRequest):
            await engine.reject(platform="test", user_id="cy", chat_id="c",
                                source_kind="photo", error=refused, dedupe_key="upd:9")
        keys = [r[0] for r in await engine.request_log.rows_since(0, ["dedupe_key"])]
    assert sorted(keys) == ["upd:7", "upd:8", "upd:9"]


async def test_limits_are_checked_before_any_picture_is_fetched(tmp_path: Path,
                                                                tiny_pipeline: Any) -> None:
    """A received request holds a user slot and a queue place until submitted or refused."""
    cfg = make_config(tmp_path, jobs={"max_queue": 2, "per_user_concurrent": 1})
    async with running_engine(cfg, tiny_pipeline) as engine:
        ann = await engine.receive(fetch_request(cfg, "ann", n=1))
        with pytest.raises(RateLimited):
            await engine.receive(fetch_request(cfg, "ann", n=2))
        await engine.receive(fetch_request(cfg, "bob", n=3))
        with pytest.raises(QueueFull):
            await engine.receive(fetch_request(cfg, "cy", n=4))
        await engine.refuse(ann, ImageRejected("not a picture", code="not_image"))
        await engine.receive(fetch_request(cfg, "cy", n=5))  # ann's place is free again
        rows = {tuple(r) for r in await engine.request_log.rows_since(
            0, ["user_id", "status", "reason", "delivery"])}
    assert rows == {("ann", "rejected", "not_image", "owed"),  # the apology is still owed
                    ("ann", "rejected", "too_many_running", None),
                    ("bob", "received", None, "owed"),
                    ("cy", "rejected", "busy", None),
                    ("cy", "received", None, "owed")}


async def restart(cfg: Any, pipeline: Any) -> tuple[RequestLog, Engine]:
    request_log = await RequestLog.open(cfg.database_url)
    engine = local_engine(cfg, request_log, pipeline_factory=lambda: pipeline)
    await engine.start()
    return request_log, engine


async def test_after_a_crash_received_rows_are_fetched_again_and_answered_once(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    request_log, engine = await restart(cfg, tiny_pipeline)
    receipts = [await engine.receive(fetch_request(cfg, user, n=n))
                for n, user in enumerate(["ann", "bob"], start=1)]
    await request_log.close()  # a crash: no stop, the rows stay received

    request_log, engine = await restart(cfg, tiny_pipeline)
    handles: list[JobHandle] = []
    taken = asyncio.Event()

    async def fetch_again(record: RequestRecord, receipt: Receipt) -> None:
        request = received_request(record)
        assert request is not None and request.reply_context == {"where": record.user_id}
        n = int((record.source or {})["n"])
        handles.append(await engine.submit(request.with_image(picture(n)), receipt=receipt))
        if len(handles) == 2:
            taken.set()

    engine.on_received("test", fetch_again)
    try:
        assert await engine.resume_recovered() == 2
        await asyncio.wait_for(taken.wait(), 10)
        results = [await asyncio.wait_for(h.result(), 30) for h in handles]
        rows = [await engine.get_request(r.id) for r in receipts]
    finally:
        await engine.stop(5)
        await request_log.close()
    assert sorted(h.id for h in handles) == sorted(r.id for r in receipts)
    assert [(r.status, r.seed) for r in rows if r is not None] == [
        ("done", rc.seed) for rc in receipts]  # the seed drawn at receipt is kept
    assert all(r.files for r in results)


async def test_owed_answers_are_handed_back_until_sent(tmp_path: Path,
                                                       tiny_pipeline: Any) -> None:
    """Done, failed or refused rows whose answer was never marked sent come back, with the
    clip (re-rendered if its files are gone) or the reason; sent ones do not."""
    cfg = make_config(tmp_path)
    request_log, engine = await restart(cfg, tiny_pipeline)
    made = {}
    for name in ("unsent", "sending", "sent", "lost"):
        handle = await engine.submit(text_request(cfg, name, f"the sound of {name}",
                                                  answer_owed=True))
        made[name] = await asyncio.wait_for(handle.result(), 30)
    await engine.mark_delivery(made["sending"].request_id, "sending")
    for state in ("sending", "sent"):
        await engine.mark_delivery(made["sent"].request_id, state)
    refused = await engine.receive(fetch_request(cfg, "ref"))
    await engine.refuse(refused, ImageRejected("not a picture", code="not_image"))
    lost_files = list(made["lost"].files.values())
    await engine.stop(5)
    await request_log.close()
    for path in lost_files:  # the cache was emptied while the bot was down
        path.unlink()

    request_log, engine = await restart(cfg, tiny_pipeline)
    got: dict[str, JobHandle] = {}
    all_in = asyncio.Event()

    async def collect(handle: JobHandle) -> None:
        got[handle.request.user_id] = handle
        if len(got) == 4:
            all_in.set()

    engine.on_recovered("test", collect)
    try:
        assert await engine.resume_recovered() == 4
        await asyncio.wait_for(all_in.wait(), 10)
        assert set(got) == {"unsent", "sending", "lost", "ref"}
        for name in ("unsent", "sending"):
            event = got[name].last_event
            assert isinstance(event, Done) and event.result.files == made[name].files
        rerendered = await asyncio.wait_for(got["lost"].result(), 30)
        assert rerendered.seed == made["lost"].seed and all(
            p.is_file() for p in rerendered.files.values())
        failed = got["ref"].last_event
        assert isinstance(failed, Failed) and failed.error.code == "not_image"
        await engine.mark_delivery(got["ref"].id, "sending")
        await engine.mark_delivery(got["ref"].id, "sent")
        assert (await engine.get_request(got["ref"].id)).delivery == "sent"  # type: ignore[union-attr]
    finally:
        await engine.stop(5)
        await request_log.close()
