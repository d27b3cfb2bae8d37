"""A real service process (tiny models) is SIGKILLed mid-batch; a restart loses nothing.

Requests taken through both entry points — `submit` (content at hand) and `receive` (the
picture still to fetch; one is never fetched before the kill) — each have their row before
the call returns, and after the restart every one of them is answered once: rendered,
fetched again, or (its spooled picture lost) apologised for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from core.errors import GenerationFailed
from core.records import RequestRecord
from core.storage.request_log import RequestLog
from tests.core.jobs.contract.harness import Backend, RedisBackend, nothing_spooled
from tests.core.jobs.contract.victim import CRASH_JOBS, FETCHED, received, submitted

ROOT = Path(__file__).resolve().parents[4]
pytestmark = pytest.mark.timeout(300)


async def start_victim(backend: Backend, data_root: Path) -> asyncio.subprocess.Process:
    args = [backend.name, str(data_root)]
    if isinstance(backend, RedisBackend):
        args += [backend.database_url, backend.redis.url]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with (data_root / "victim.stderr").open("wb") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.core.jobs.contract.victim", *args, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=err, env=env)


async def kill_mid_batch(proc: asyncio.subprocess.Process, data_root: Path,
                         expected: int) -> tuple[list[str], list[str], str]:
    """Read the victim's reports; SIGKILL it once every request is recorded and its second
    batch is rendering (that call never ends, so the kill cannot land after it)."""
    errors = data_root / "victim.stderr"
    recorded: list[str] = []
    done: list[str] = []
    slow = ""
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(200):
            while not slow or len(recorded) < expected:
                line = (await proc.stdout.readline()).decode().strip()
                if not line:
                    raise AssertionError("victim exited early:\n" + errors.read_text()[-3000:])
                word, _, rest = line.partition(" ")
                if word in ("ACCEPTED", "RECEIVED"):
                    recorded.append(rest)
                elif word == "DONE":
                    done.append(rest)
                elif word == "SLOW":
                    slow = rest
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return recorded, done, slow


async def test_sigkill_mid_batch_then_restart_answers_every_recorded_request(
        backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cfg = backend.config(jobs=CRASH_JOBS)  # the victim's, for the same rows and files
    expected = len(submitted(cfg)) + len(received(cfg))
    proc = await start_victim(backend, tmp_path)
    try:  # load our own models while the victim loads its own (two cores, half the wait)
        tiny_pipeline: Any = request.getfixturevalue("tiny_pipeline")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    recorded, done_before, slow = await kill_mid_batch(proc, tmp_path, expected)
    assert int(slow) >= 1 and len(recorded) == expected

    request_log = await RequestLog.open(cfg.database_url)
    try:
        rows = {r.id: r for r in map(RequestRecord.from_row, await request_log.rows_since(0))}
    finally:
        await request_log.close()
    # One row per request, each written before its call returned; nothing else.
    assert set(rows) == set(recorded)
    assert all(rows[i].status == "done" for i in done_before)
    statuses = [r.status for r in rows.values()]
    assert statuses.count("running") >= int(slow)  # killed mid-batch: its rows say running
    # The picture whose fetch never ended: still received (its source kept, no picture).
    left = [r for r in rows.values() if r.status == "received"]
    assert len(left) == len(received(cfg)) - FETCHED and left[0].source is not None
    unfinished = {i for i, r in rows.items() if not r.finished}

    # One spooled picture of a job still waiting is lost with the crash: that job can only
    # be apologised for.
    spooled = await backend.spooled(cfg)
    queued = sorted(i for i in spooled if rows[i].status == "queued")
    assert spooled and spooled <= unfinished and queued
    lost = queued[0]
    await backend.lose_picture(cfg, lost)

    service, handed = await backend.restart(cfg, tiny_pipeline)
    try:
        assert sorted(h.id for h in handed) == sorted(unfinished)
        outcomes: dict[str, str] = {}
        for handle in handed:
            assert handle.request.reply_context == rows[handle.id].reply_context
            try:
                result = await asyncio.wait_for(handle.result(), 120)
                assert result.files["ogg"].is_file()
                outcomes[handle.id] = "done"
            except GenerationFailed as exc:
                outcomes[handle.id] = exc.code
        assert outcomes.pop(lost) == "interrupted"
        assert set(outcomes.values()) == {"done"}
        # The rows whose pictures were still to fetch were fetched again, once each.
        assert sorted(h.id for h in service.fetched) == sorted(r.id for r in left)
        final = {r.id: r for r in map(RequestRecord.from_row,
                                             await service.request_log.rows_since(0))}
        await nothing_spooled(backend, cfg)
    finally:
        await service.stop()
    # No row went missing, none is left hanging; the log agrees with what was recorded.
    assert set(final) == set(rows)
    assert (final[lost].status, final[lost].reason) == ("interrupted", "interrupted")
    assert {r.status for i, r in final.items() if i != lost} == {"done"}
