"""The console says, once per request, what was asked, how it ended and how long it took."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from core.config import Config
from core.errors import BadRequest
from core.jobs.journal import Journal, OutcomeLine
from core.records import RequestStatus
from tests.core.jobs.engine_support import running_engine, text_request


async def test_each_request_gets_one_line_as_it_ends(tiny_config: Config, tiny_pipeline: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sonify.requests")
    async with running_engine(tiny_config, tiny_pipeline) as engine:
        first = await engine.submit(text_request(tiny_config, "ann", "a   distant\nfoghorn",
                                                 seed=3))
        await first.result()
        again = await engine.submit(text_request(tiny_config, "bob", "a   distant\nfoghorn",
                                                 seed=3))
        await again.result()
        with pytest.raises(BadRequest):
            await engine.submit(text_request(tiny_config, "cat", "   "))
    lines = [r.getMessage() for r in caplog.records if r.name == "sonify.requests"]
    assert len(lines) == 3
    assert lines[0].startswith(f"request {first.id} telegram:ann text → done in ")
    assert lines[0].endswith(' s, batch of 1 "a distant foghorn"')
    assert lines[1].startswith(f"request {again.id} telegram:bob text → done in ")
    assert ", from the cache" in lines[1]
    assert lines[2].startswith("request ")
    assert lines[2].endswith(" telegram:cat text → rejected (bad_option)")


def test_a_long_text_is_shortened(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sonify.requests")
    Journal().outcome("abc", "web:1.2.3.4", "upload", RequestStatus.FAILED, reason="timeout",
                      text="x" * 500)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f'request abc web:1.2.3.4 upload → failed (timeout) "{"x" * 60}…"'


def test_listeners_belong_to_their_journal(caplog: pytest.LogCaptureFixture) -> None:
    """Each process's services hold their own journal: a listener hears that journal's
    outcomes only, until it unsubscribes (no listener list shared by the whole module)."""
    ours, theirs = Journal(), Journal()
    heard: list[OutcomeLine] = []
    stop = ours.subscribe(heard.append)
    ours.outcome("a", "web:1", "text", RequestStatus.DONE)
    theirs.outcome("b", "web:2", "text", RequestStatus.DONE)
    stop()
    ours.outcome("c", "web:1", "text", RequestStatus.DONE)
    assert [line.request_id for line in heard] == ["a"]
    assert heard[0].outcome == "done" and heard[0].user_id == "1"
