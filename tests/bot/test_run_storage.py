"""`sonify run` (the local backend) and its SQLite request log, as real processes: the file
made unwritable for 10 s under a steady load (`chattr +i`), a second run on the same log, a
killed first one, and SQLite's shared memory made unwritable under a running process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.storage.request_log import RequestLog
from tests.conftest import tiny_toml
from tests.local_servers import Unwritable, free_port, sqlite_files
from tests.sonify_process import EXIT_WITHIN_S, SonifyProcess, offline_env
from tests.steady_load import SteadyLoad, png

pytestmark = pytest.mark.timeout(400)

OUTAGE_S = 10.0  # the figure
RATE = 2.0  # requests per second
READY_WITHIN_S = 120.0
ANSWERED_WITHIN_S = 60.0  # after the file is writable again


def write_config(root: Path, port: int) -> Path:
    path = root / "sonify.toml"
    path.write_text(tiny_toml(
        root / "data",
        generation={"steps": 16},  # renders slow enough that jobs are in flight at the fault
        jobs={"max_batch": 4, "max_wait_ms": 100, "max_queue": 1000,
              "per_user_concurrent": 100, "per_user_per_hour": 10_000},
        web={"enabled": "true", "port": port, "per_address_concurrent": 0,
             "per_address_per_hour": 0, "new_browsers_per_hour": 1000}))
    return path


async def ready(proc: SonifyProcess, base: str) -> None:
    """Until the web page answers (failing at once, with its log, if the process ends)."""

    async def answers() -> None:
        while True:
            try:
                async with aiohttp.ClientSession() as session, \
                        session.get(base + "/api/config") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)

    await proc.unless_exited(asyncio.wait_for(answers(), READY_WITHIN_S))


@pytest.mark.parametrize("outage_s", [OUTAGE_S])
async def test_an_unwritable_log_under_load_recovers_without_a_restart(
        tmp_path: Path, tiny_pipeline: Any, outage_s: float) -> None:
    Unwritable.check(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = SonifyProcess(write_config(tmp_path, port), tmp_path / "run.log",
                         offline_env(OMP_NUM_THREADS="1"))
    database = tmp_path / "data" / "sonify.db"
    fault = sqlite_files(database)
    load: SteadyLoad | None = None
    try:
        await proc.start()
        await ready(proc, base)
        load = await SteadyLoad.open(base, RATE, browsers=3)
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(stop))
        await proc.unless_exited(load.accepted_more(6))
        broken = time.time()
        fault.apply()
        await asyncio.sleep(outage_s)  # the fault itself, under the load
        fault.restore()
        back = time.time()
        after = len(load.answers)
        await proc.unless_exited(load.accepted_more(6))  # taken again, by the same process
        stop.set()
        await running
        done = await proc.unless_exited(
            asyncio.wait_for(load.all_done(), ANSWERED_WITHIN_S + 30))
        assert proc.returncode is None  # no restart

        assert load.statuses("POST") <= {202, 503}, Counter(a.status for a in load.answers)
        assert load.statuses("GET") <= {200, 503}
        refused = [a for a in load.answers if a.status == 503]
        assert any(a.method == "POST" for a in refused), "the fault was never felt"
        assert all(a.code == "unavailable" and a.retry_after for a in refused), refused
        # Recovered for good: once a request was taken again, none was refused.
        later = load.answers[after:]
        first_taken = next(i for i, a in enumerate(later) if a.status == 202)
        assert all(a.status != 503 for a in later[first_taken:])
        assert set(done) == set(load.accepted)
        check = await RequestLog.open(f"sqlite+aiosqlite:///{database}")
        try:
            rows = await check.rows_since(0, ["id", "status", "created_at", "finished_at"])
        finally:
            await check.close()
        assert {r.status for r in rows} == {"done"}, Counter(r.status for r in rows)
        assert {r.id for r in rows} == set(load.accepted)
        assert max(r.finished_at for r in rows) - back <= ANSWERED_WITHIN_S
        assert any(r.created_at < broken < back < r.finished_at for r in rows), \
            "no job was in flight during the fault"
        # Each told its outcome once — never "generating the sound failed" first.
        ended = Counter(re.findall(r"request (\S+) web:\S+ upload → (\w+)", proc.text()))
        assert ended == Counter({(job_id, "done"): 1 for job_id in load.accepted}), ended
        text = proc.text()
        assert "Traceback" not in text and "never retrieved" not in text, proc.tail()
        # The fault is told in one line when it begins and one when it ends.
        assert text.count("outage: the request log is unavailable (") == 1
        assert text.count("outage: the request log is back (") == 1
    finally:
        fault.restore()
        if load is not None:
            await load.close()
        if proc.returncode is None and proc.proc is not None:
            await proc.terminate()
        await proc.ensure_stopped()


async def test_a_second_run_on_the_same_log_stops_and_a_killed_ones_lease_is_taken_over(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    env = offline_env(OMP_NUM_THREADS="1")
    first = SonifyProcess(config, tmp_path / "first.log", env)
    second = SonifyProcess(config, tmp_path / "second.log", env)
    third = SonifyProcess(config, tmp_path / "third.log", env)
    try:
        await first.start()
        await ready(first, f"http://127.0.0.1:{port}")
        await second.start()
        assert second.proc is not None
        assert await asyncio.wait_for(second.proc.wait(), EXIT_WITHIN_S) == 1
        (line,) = second.text().splitlines()  # one line: who holds it, what to do instead
        assert first.proc is not None
        assert line.startswith(f"sonify: the request log {tmp_path / 'data' / 'sonify.db'} "
                               "is in use by another sonify process "
                               f"(pid {first.proc.pid} on {socket.gethostname()}, since ")
        assert 'backend = "redis"' in line
        assert first.returncode is None  # and the first one goes on, its jobs its own

        await first.kill()  # SIGKILL: no chance to let go of anything
        await third.start()
        await ready(third, f"http://127.0.0.1:{port}")  # taken over at once
        assert third.proc is not None
        owner = (tmp_path / "data" / "sonify.db.owner").read_text()
        assert f"pid {third.proc.pid} " in owner
    finally:
        for proc in (first, second, third):
            await proc.ensure_stopped()


async def test_shared_memory_made_unwritable_under_it_leaves_a_last_line(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    """SQLite maps `-shm` into memory; a write to it once it is immutable is SIGBUS, which no
    program can catch — but the log still says what happened, and where."""
    Unwritable.check(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = SonifyProcess(write_config(tmp_path, port), tmp_path / "run.log",
                         offline_env(OMP_NUM_THREADS="1"))
    shm = tmp_path / "data" / "sonify.db-shm"
    fault = Unwritable(shm)
    try:
        await proc.start()
        await ready(proc, base)
        assert shm.exists()
        fault.apply()
        os.sync()  # written back: the next write to a mapped page asks the file system
        assert proc.proc is not None

        async def write_until_it_dies() -> None:
            n = 0
            while proc.returncode is None:
                form = aiohttp.FormData()
                form.add_field("image", png(n), filename="p.png", content_type="image/png")
                try:
                    async with aiohttp.ClientSession() as session, \
                            session.post(base + "/api/jobs", data=form) as resp:
                        await resp.read()
                except aiohttp.ClientError:
                    pass  # it died mid-request
                n += 1
                await asyncio.sleep(0.1)

        await asyncio.wait_for(asyncio.gather(write_until_it_dies(), proc.proc.wait()),
                               EXIT_WITHIN_S)
        assert proc.returncode == -signal.SIGBUS
        assert "Fatal Python error: Bus error" in proc.text()
    finally:
        fault.restore()
        await proc.ensure_stopped()
