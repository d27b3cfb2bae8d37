"""`sonify health` against real processes: `sonify run` with `[metrics] listen`, and a
`sonify worker --metrics-port` whose heartbeat `sonify run` sees (as docker-compose.yml's
health checks ask them)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import tiny_toml
from tests.local_servers import RedisServer, free_port
from tests.sonify_process import ROOT, SonifyProcess, offline_env, sonify_command

pytestmark = pytest.mark.timeout(300)

READY_WITHIN_S = 120.0


async def health(*args: str) -> tuple[int, str]:
    """`sonify health ARGS`: (exit code, what it printed)."""
    proc = await asyncio.create_subprocess_exec(
        *sonify_command(), "health", *args, cwd=ROOT, env=offline_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def until_healthy(procs: list[SonifyProcess], ready_url: str, *args: str) -> str:
    """Ask `sonify health ARGS` until it says ready (failing if a process exits first).

    Until `ready_url` answers 200 the asking is in-process: each `sonify health` is a Python
    start (about 1 s of CPU), and dozens of them slowed the start they were waiting for."""
    async def ready() -> str:
        while True:  # a port of another process: polled
            if await status_of(ready_url) == 200:
                break
            await asyncio.sleep(0.1)
        while True:
            code, out = await health(*args)
            if code == 0:
                return out
            await asyncio.sleep(0.5)

    work = ready()
    for proc in procs:
        work = proc.unless_exited(work)
    return await asyncio.wait_for(work, READY_WITHIN_S)


async def status_of(url: str) -> int | None:
    """The status `url` answers with; None while nothing listens."""
    try:
        return (await get(url))[0]
    except aiohttp.ClientError:
        return None


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    raise AssertionError(f"no {name} {labels}")


async def test_run_serves_health_and_metrics_on_metrics_listen(tmp_path: Path,
                                                                tiny_pipeline: Any) -> None:
    web, listen = free_port(), free_port()
    config = tmp_path / "run.toml"
    config.write_text(tiny_toml(tmp_path / "data", web={"enabled": "true", "port": web},
                                metrics={"listen": f"127.0.0.1:{listen}"}), encoding="utf-8")
    # Nothing answers yet: one line, exit code 1.
    code, out = await health("--config", str(config))
    assert code == 1 and out.startswith("sonify: no answer from http://127.0.0.1:")
    proc = SonifyProcess(config, tmp_path / "run.log", offline_env(OMP_NUM_THREADS="1"))
    try:
        await proc.start()
        assert (await until_healthy([proc], f"http://127.0.0.1:{listen}/readyz",
                                         "--config", str(config))).strip() == "ready"
        assert (await health("--config", str(config), "--live")) == (0, "live\n")
        status, text = await get(f"http://127.0.0.1:{listen}/metrics")
        assert status == 200 and sample(text, "sonify_workers_alive") == 1
        assert (await get(f"http://127.0.0.1:{web}/metrics"))[0] == 404  # not on the page
        assert (await get(f"http://127.0.0.1:{web}/readyz"))[0] == 200  # health is on both
        assert f"Sonify metrics and health checks: http://127.0.0.1:{listen}/metrics" \
            in proc.text()
    finally:
        await proc.terminate()


async def test_a_worker_answers_health_on_its_metrics_port_and_is_seen_alive(
        tmp_path: Path, redis_server: RedisServer, postgres_url: str,
        tiny_pipeline: Any) -> None:
    web, metrics = free_port(), free_port()
    jobs = {"backend": "redis", "redis_url": redis_server.url}
    storage = {"database_url": postgres_url}
    run_config, worker_config = tmp_path / "run.toml", tmp_path / "worker.toml"
    run_config.write_text(tiny_toml(tmp_path / "run", jobs=jobs, storage=storage,
                                    web={"enabled": "true", "port": web}), encoding="utf-8")
    worker_config.write_text(tiny_toml(tmp_path / "worker", jobs=jobs, storage=storage),
                             encoding="utf-8")
    env = offline_env(OMP_NUM_THREADS="1")
    run = SonifyProcess(run_config, tmp_path / "run.log", env)
    worker = SonifyProcess(worker_config, tmp_path / "worker.log", env,
                           command=("worker", "--name", "gpu-7", "--metrics-port",
                                    str(metrics)))
    procs = [run, worker]
    try:
        for proc in procs:
            await proc.start()
        await until_healthy(procs, f"http://127.0.0.1:{metrics}/readyz", "--port", str(metrics))
        await until_healthy(procs, f"http://127.0.0.1:{web}/readyz", "--config",
                            str(run_config))
        status, text = await get(f"http://127.0.0.1:{metrics}/readyz")
        assert status == 200 and '"models": "ok"' in text and '"redis": "ok"' in text
        status, text = await get(f"http://127.0.0.1:{web}/metrics")
        assert status == 200
        assert sample(text, "sonify_workers_alive") == 1
        assert sample(text, "sonify_worker_jobs_total", worker="gpu-7") == 0
        status, text = await get(f"http://127.0.0.1:{metrics}/metrics")
        assert sample(text, "sonify_build_info", role="worker",
                      version=_version(text)) == 1
    finally:
        for proc in procs:
            await proc.terminate()
    # A stopped worker answers nothing: its health check fails.
    code, out = await health("--port", str(metrics))
    assert code == 1 and "no answer" in out


def _version(text: str) -> str:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == "sonify_build_info":
                return found.labels["version"]
    raise AssertionError("no sonify_build_info")
