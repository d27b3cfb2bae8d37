"""A real engine process (tiny models, SQLite) is SIGKILLed mid-batch; a restart loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from core.errors import GenerationFailed
from core.jobs.local import local_engine
from core.storage.request_log import RequestLog
from tests.core.jobs.crash_worker import PLATFORM, crash_config, requests
from tests.core.jobs.engine_support import Handed

ROOT = Path(__file__).resolve().parents[3]


async def start_victim(data_root: Path) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with (data_root / "victim.stderr").open("wb") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.core.jobs.crash_worker", str(data_root), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=err, env=env)


async def kill_mid_batch(proc: asyncio.subprocess.Process, data_root: Path,
                         submitted: int) -> tuple[list[str], list[str], str]:
    """Read the victim's reports; SIGKILL it once every job is accepted and its second
    batch is rendering (that call never ends, so the kill cannot land after it)."""
    errors = data_root / "victim.stderr"
    accepted: list[str] = []
    done: list[str] = []
    slow = ""
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(150):
            while not slow or len(accepted) < submitted:
                line = (await proc.stdout.readline()).decode().strip()
                if not line:
                    raise AssertionError("victim exited early:\n" + errors.read_text()[-3000:])
                word, _, rest = line.partition(" ")
                if word == "ACCEPTED":
                    accepted.append(rest)
                elif word == "DONE":
                    done.append(rest)
                elif word == "SLOW":
                    slow = rest
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return accepted, done, slow


async def test_sigkill_mid_batch_then_restart_answers_or_interrupts_every_job(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    cfg = crash_config(tmp_path)
    submitted = len(requests(cfg))
    proc = await start_victim(tmp_path)
    try:  # load our own models while the victim loads its own (two cores, half the wait)
        tiny_pipeline: Any = request.getfixturevalue("tiny_pipeline")
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    accepted, done_before, slow = await kill_mid_batch(proc, tmp_path, submitted)
    assert int(slow) >= 1 and len(accepted) == submitted

    request_log = await RequestLog.open(cfg.database_url)
    rows = {r[0]: r[1] for r in await request_log.rows_since(0, ["id", "status"])}
    # One row per submission, each written before its submit returned; nothing else.
    assert len(rows) == submitted and set(rows) == set(accepted)
    assert all(rows[i] == "done" for i in done_before)
    unfinished = [i for i, s in rows.items() if s in ("queued", "running")]
    # Killed mid-batch: the rendering batch's rows (riders included) say running.
    assert list(rows.values()).count("running") >= int(slow)
    # One spooled picture is lost with the crash: that job can only be apologised for.
    spooled = sorted(p.stem for p in (cfg.data_dir / "spool").glob("*.png"))
    assert spooled and set(spooled) <= set(unfinished)
    (cfg.data_dir / "spool" / f"{spooled[0]}.png").unlink()

    answer = Handed()
    engine = local_engine(cfg, request_log, pipeline_factory=lambda: tiny_pipeline)
    await engine.start()
    engine.on_recovered(PLATFORM, answer)
    try:
        handed = await answer.until(await engine.resume_recovered())
        assert sorted(h.id for h in handed) == sorted(unfinished)
        outcomes: dict[str, str] = {}
        for handle in handed:
            assert "n" in handle.request.reply_context
            try:
                result = await asyncio.wait_for(handle.result(), 60)
                assert result.files["ogg"].is_file()
                outcomes[handle.id] = "done"
            except GenerationFailed as exc:
                outcomes[handle.id] = exc.code
        assert outcomes.pop(spooled[0]) == "interrupted"
        assert set(outcomes.values()) <= {"done"}
        final = {r[0]: r[1] for r in await request_log.rows_since(0, ["id", "status"])}
    finally:
        await engine.stop(5)
        await request_log.close()
    # No row went missing, none is left hanging; the log agrees with what was accepted.
    assert set(final) == set(rows)
    assert final[spooled[0]] == "interrupted"
    assert {s for i, s in final.items() if i != spooled[0]} == {"done"}
    assert not list((cfg.data_dir / "spool").glob("*.png"))
