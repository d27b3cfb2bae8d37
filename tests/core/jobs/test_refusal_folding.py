"""Refusals of one kind from one user within a minute are one row with a count: a client
hammering the door adds a row a minute, not a row a request — and the stats still count
every refusal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from core.errors import BadRequest, DuplicateRequest, RateLimited
from core.stats.collect import collect_stats
from tests.conftest import make_config
from tests.core.jobs.engine_support import running_engine, text_request

pytestmark = pytest.mark.timeout(120)

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


async def test_refusals_of_one_kind_within_a_minute_are_one_row_with_a_count(
        log_url: str, tmp_path: Path, tiny_pipeline: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, storage={"database_url": log_url} if "postgres" in log_url
                         else {})
    clock = Clock()
    caplog.set_level(logging.INFO, "sonify.requests")
    async with running_engine(config, tiny_pipeline, clock=clock) as engine:
        async def refuse(user: str, code: str, **extra: Any) -> str:
            return await engine.reject(platform="web", user_id=user, chat_id=user,
                                       source_kind="upload",
                                       error=RateLimited("slow down", code=code), **extra)

        # One client, 250 refusals in 50 s: one row.
        first = await refuse("ip:198.51.100.7", "address_busy")
        for _ in range(249):
            clock.now += 0.2
            assert await refuse("ip:198.51.100.7", "address_busy") == first
        # Another kind, another user: rows of their own.
        other_kind = await refuse("ip:198.51.100.7", "address_hourly")
        other_user = await refuse("ip:203.0.113.9", "address_busy")
        # The engine's own refusals (an empty text) fold the same way.
        for _ in range(3):
            with pytest.raises(BadRequest):
                await engine.submit(text_request(config, "ip:198.51.100.7", " "))
        # A minute after the row began, a new row begins.
        clock.now = NOW + 61
        later = await refuse("ip:198.51.100.7", "address_busy")
        assert len({first, other_kind, other_user, later}) == 4

        rows = {r.id: r for r in await engine.request_log.rows_since(0)}
        assert len(rows) == 5
        assert (rows[first].times, rows[first].status, rows[first].reason) == (
            250, "rejected", "address_busy")
        assert rows[first].created_at == NOW and rows[first].finished_at == pytest.approx(
            NOW + 49.8)
        assert rows[other_kind].times == rows[other_user].times == rows[later].times == 1
        assert sorted(r.times for r in rows.values()) == [1, 1, 1, 3, 250]
        # Every refusal counts in the stats, each in its row's count.
        stats = await collect_stats(engine.request_log, now=NOW + 120)
        assert stats.all_time.by_status == {"rejected": 256}
        assert sum(day.by_platform.get("web", 0) for day in stats.days) == 253
        assert stats.top_users == []  # refusals are not usage
    # The console shows the first refusal, then the 10th and the 100th with the count.
    lines = [r.getMessage() for r in caplog.records
             if "address_busy" in r.getMessage() and "198.51.100.7" in r.getMessage()]
    assert len(lines) == 4
    assert lines[1].endswith("(address_busy) ×10 in a minute")
    assert "×100 in a minute" in lines[2]


async def test_a_redelivered_refusal_is_still_recognised_when_folded(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    config = make_config(tmp_path)
    clock = Clock()
    async with running_engine(config, tiny_pipeline, clock=clock) as engine:
        async def refuse(update: int) -> str:
            return await engine.reject(platform="telegram", user_id="42", chat_id="42",
                                       source_kind="photo",
                                       error=RateLimited("limit", code="hourly_limit"),
                                       dedupe_key=f"telegram:update:{update}")

        row_id = await refuse(1)
        clock.now += 1
        assert await refuse(2) == row_id
        # The platform sends the newest update again (its offset was not confirmed): told
        # once, not twice.
        with pytest.raises(DuplicateRequest) as duplicate:
            await refuse(2)
        assert duplicate.value.request_id == row_id
        record = await engine.request_log.get(row_id)
        assert record is not None and record.times == 2
