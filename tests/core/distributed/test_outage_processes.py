"""PostgreSQL stopped for 10 s in the middle of a steady load on the redis backend, with real
processes (`sonify run` serving the web API, one `sonify worker`) and real servers: the web
answers 503 with Retry-After meanwhile (never a 500), and every accepted job is done exactly
once within 60 s of the database's return — none held past the outage."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.storage.request_log import RequestLog
from tests.conftest import tiny_toml
from tests.local_servers import PostgresServer, RedisServer, free_port
from tests.sonify_process import SonifyProcess, offline_env
from tests.steady_load import SteadyLoad

pytestmark = pytest.mark.timeout(400)

OUTAGE_S = 10.0  # the figure
RATE = 2.0  # requests per second
READY_WITHIN_S = 120.0
ANSWERED_WITHIN_S = 60.0  # after the database is back


def write_config(root: Path, name: str, database_url: str, redis_url: str,
                 port: int = 0) -> Path:
    path = root / f"{name}.toml"
    path.write_text(tiny_toml(
        root / name,
        generation={"steps": 16},  # renders slow enough that jobs are in flight at the stop
        jobs={"backend": "redis", "redis_url": redis_url, "redeliver_after_s": 5.0,
              "poll_interval_s": 0.2, "max_batch": 4, "max_wait_ms": 100, "max_queue": 1000,
              "per_user_concurrent": 100, "per_user_per_hour": 10_000},
        storage={"database_url": database_url},
        web={"enabled": "true" if port else "false", "port": port,
             "per_address_concurrent": 0, "per_address_per_hour": 0,
             "new_browsers_per_hour": 1000}))
    return path


async def until(check: Any, what: str, limit_s: float, procs: list[SonifyProcess]) -> None:
    try:
        async with asyncio.timeout(limit_s):
            while not await check():
                for proc in procs:
                    if proc.returncode is not None:
                        raise AssertionError(f"{proc.log.name} exited ({proc.returncode}) "
                                             f"while waiting for {what}:\n{proc.tail()}")
                await asyncio.sleep(0.1)
    except TimeoutError:
        tails = "\n".join(f"--- {proc.log.name}\n{proc.tail()}" for proc in procs)
        raise AssertionError(f"no {what} within {limit_s} s\n{tails}") from None


async def answers(base: str) -> bool:
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session, session.get(base + "/api/config") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def check_no_tracebacks(*procs: SonifyProcess) -> None:
    for proc in procs:
        text = proc.text()
        assert "Traceback" not in text and "never retrieved" not in text, proc.tail()


@pytest.mark.parametrize("outage_s", [OUTAGE_S])
async def test_postgres_stopped_under_a_steady_load_loses_and_repeats_nothing(
        tmp_path: Path, redis_server: RedisServer, tiny_pipeline: Any,
        outage_s: float) -> None:  # tiny_pipeline: the tiny models are built once, here
    postgres = PostgresServer()  # its own cluster: this test stops it
    postgres.start()
    url = postgres.new_database()
    port = free_port()
    env = offline_env(OMP_NUM_THREADS="1")
    worker = SonifyProcess(write_config(tmp_path, "w1", url, redis_server.url),
                           tmp_path / "w1.log", env, command=("worker", "--name", "w1"))
    adapter = SonifyProcess(write_config(tmp_path, "web", url, redis_server.url, port),
                            tmp_path / "web.log", env)
    procs = [worker, adapter]
    base = f"http://127.0.0.1:{port}"
    load: SteadyLoad | None = None
    try:
        for proc in procs:
            await proc.start()
        await until(lambda: _true("takes jobs from" in worker.text()), "the worker",
                    READY_WITHIN_S, procs)
        await until(lambda: answers(base), "the web page", READY_WITHIN_S, procs)

        load = await SteadyLoad.open(base, RATE, browsers=3)
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(stop))
        await adapter.unless_exited(load.accepted_more(6))
        halted = time.time()
        await asyncio.to_thread(postgres.halt)
        await asyncio.sleep(outage_s)  # the outage itself, under the load
        await asyncio.to_thread(postgres.resume)
        back = time.time()
        await adapter.unless_exited(load.accepted_more(6))  # taken again, no restart
        stop.set()
        await running
        done = await adapter.unless_exited(
            asyncio.wait_for(load.all_done(), ANSWERED_WITHIN_S + 30))

        # While the database was away, new requests were asked to come back (503 with
        # Retry-After and a JSON error), never given a 500.
        assert load.statuses("POST") <= {202, 503}, Counter(a.status for a in load.answers)
        assert load.statuses("GET") <= {200, 503}
        refused = [a for a in load.answers if a.status == 503]
        assert any(a.method == "POST" for a in refused), "the outage was never felt"
        assert all(a.code == "unavailable" and a.retry_after for a in refused), refused
        # Every accepted job is done (as its browser sees it)...
        assert set(done) == set(load.accepted)
        check = await RequestLog.open(url)
        try:
            rows = await check.rows_since(0, ["id", "status", "created_at", "finished_at"])
        finally:
            await check.close()
        # ... and nothing is left held: every row is finished, within 60 s of the return,
        assert {r.status for r in rows} == {"done"}, Counter(r.status for r in rows)
        assert {r.id for r in rows} == set(load.accepted)
        assert max(r.finished_at for r in rows) - back <= ANSWERED_WITHIN_S
        # jobs in flight at the stop among them,
        assert any(r.created_at < halted < back < r.finished_at for r in rows), \
            "no job was in flight during the outage"
        # and exactly once: one line per request as it ended, in the adapter's log.
        ended = Counter(re.findall(r"request (\S+) web:\S+ upload → (\w+)", adapter.text()))
        assert ended == Counter({(job_id, "done"): 1 for job_id in load.accepted}), ended
        check_no_tracebacks(worker, adapter)
    finally:
        if load is not None:
            await load.close()
        for proc in procs:
            if proc.proc is not None and proc.returncode is None:
                await proc.terminate()
        for proc in procs:
            await proc.ensure_stopped()
        postgres.stop()


async def _true(value: bool) -> bool:
    return value
