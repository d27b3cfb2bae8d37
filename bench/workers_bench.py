"""Throughput of the redis backend: the same jobs rendered by 1 and by 2 `sonify worker`s.

    .venv/bin/python bench/workers_bench.py --jobs 24 --users 6

Starts a private `redis-server` and PostgreSQL on loopback (Debian's packages, as the tests
do), then for each worker count: a fresh database, that many `sonify worker` processes
(models loaded before the clock starts), and one adapter-side engine in this process that
queues `--jobs` text jobs from `--users` users at once and waits for every clip. Printed
side by side: wall time, jobs per second, the speed-up over one worker, and how the jobs
and batches fell across the workers. Tiny random models by default (`--preset default` for
real weights on a GPU machine: one GPU per worker, `CUDA_VISIBLE_DEVICES` set per worker).
Each worker gets one CPU thread (OMP_NUM_THREADS=1), so on a CPU the speed-up says how
well two workers share the queue, not how fast one is — as far as the machine lets two
processes compute at once: the first line printed measures that (two busy processes
against one), since virtual CPUs may share one physical core.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import Config, parse_config
from core.distributed.transport import redis_engine
from core.jobs.request import JobRequest
from core.models.loading import ModelLoader
from core.options import GenerationOptions
from core.storage.request_log import RequestLog
from tests.local_servers import PostgresServer, RedisServer

READY_LINE = "takes jobs from"
READY_WITHIN_S = 600.0


def sections(args: argparse.Namespace, data_dir: Path, database_url: str,
             redis_url: str) -> dict[str, dict[str, object]]:
    return {
        "models": {"preset": args.preset, "device": args.device,
                   **({"cache_dir": args.cache_dir} if args.cache_dir else {})},
        "generation": {"seconds": args.seconds, "steps": args.steps, "caption_beams": 2,
                       "caption_max_tokens": 8},
        "jobs": {"backend": "redis", "redis_url": redis_url, "max_batch": args.max_batch,
                 "max_wait_ms": args.max_wait_ms, "max_queue": 10_000,
                 "per_user_concurrent": args.jobs, "per_user_per_hour": 100_000,
                 "cache_max_mb": 0, "poll_interval_s": 0.5},
        "storage": {"data_dir": str(data_dir), "database_url": database_url},
    }


def toml(data: dict[str, dict[str, object]]) -> str:
    def value(v: object) -> str:
        return f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) \
            else repr(v)
    return "".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in keys.items())
                   for name, keys in data.items())


async def start_worker(config_path: Path, name: str, log: Path,
                       gpu: int | None) -> asyncio.subprocess.Process:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    sonify = Path(sys.executable).parent / "sonify"
    with log.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            str(sonify), "worker", "--config", str(config_path), "--name", name, env=env,
            stdout=sink, stderr=sink)


def log_text(log: Path) -> str:
    return log.read_text("utf-8", "replace") if log.exists() else ""


async def wait_ready(log: Path, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while READY_LINE not in log_text(log):
        if proc.returncode is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start:\n{log_text(log)[-3000:]}")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Run:
    workers: int
    wall_s: float
    queued_s: float  # until the last job was queued
    per_worker: dict[str, int]
    mean_batch: float


async def run_once(args: argparse.Namespace, workers: int, root: Path, pg: PostgresServer,
                   redis: RedisServer) -> Run:
    redis.restart_empty()
    database_url = pg.new_database()
    run_dir = root / f"workers-{workers}"
    run_dir.mkdir()
    procs: list[asyncio.subprocess.Process] = []
    for n in range(workers):
        data = sections(args, run_dir / f"w{n}", database_url, redis.url)
        path = run_dir / f"w{n}.toml"
        path.write_text(toml(data))
        log = run_dir / f"w{n}.log"
        proc = await start_worker(path, f"w{n}", log, n if args.device == "cuda" else None)
        procs.append(proc)
        await wait_ready(log, proc)
    config: Config = parse_config(sections(args, run_dir / "adapter", database_url, redis.url),
                                  source="workers bench", environ={})
    request_log = await RequestLog.open(database_url)
    engine = redis_engine(config, request_log)
    await engine.start()
    try:
        options = GenerationOptions.from_config(config.generation)
        started = time.perf_counter()
        handles = [await engine.submit(JobRequest(
            platform="web", user_id=f"u{n % args.users}", chat_id="bench", source_kind="text",
            options=options, caption=f"a sound number {n} of {workers}", seed=n))
            for n in range(args.jobs)]
        queued_s = time.perf_counter() - started
        await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)),
                               READY_WITHIN_S)
        wall = time.perf_counter() - started
        rows = [await request_log.get(h.id) for h in handles]
    finally:
        await engine.stop()
        await request_log.close()
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await proc.wait()
    per_worker = collections.Counter(r.worker or "?" for r in rows if r is not None)
    batches = [r.batch_size for r in rows if r is not None and r.batch_size]
    return Run(workers, wall, queued_s, dict(sorted(per_worker.items())),
               statistics.fmean(batches) if batches else 0.0)


def _spin(_: int = 0) -> float:
    started = time.perf_counter()
    total = 0
    for n in range(5_000_000):
        total += n
    return time.perf_counter() - started


def parallel_capacity() -> float:
    """How many processes this machine really runs at once (2.0: two full cores)."""
    _spin()  # warm-up: the first run also pays for the CPU leaving its idle state
    alone = _spin()
    with multiprocessing.Pool(2) as pool:
        together = max(pool.map(_spin, range(2)))
    return 2 * alone / together


async def main(args: argparse.Namespace) -> None:
    capacity = parallel_capacity()
    root = Path(tempfile.mkdtemp(prefix="sonify-workers-bench-"))
    # Build (or find) the models once, so no worker builds them while another reads them.
    warm = parse_config(sections(args, root / "warm", "sqlite+aiosqlite://", "redis://"),
                        source="workers bench", environ={})
    await asyncio.to_thread(lambda: ModelLoader(warm).pipeline())
    pg, redis = PostgresServer().start(), RedisServer(root).start()
    try:
        results = [await run_once(args, n, root, pg, redis) for n in (1, 2)]
    finally:
        redis.stop()
        pg.stop()
    base = results[0].wall_s
    print(f"{os.cpu_count()} CPUs; two busy processes run as fast as {capacity:.2f} alone")
    print(f"{args.jobs} jobs from {args.users} users, preset {args.preset} on {args.device}, "
          f"{args.steps} steps, {args.seconds} s clips, max_batch {args.max_batch}")
    print(f"{'workers':>7} {'queued s':>8} {'wall s':>8} {'jobs/s':>7} {'speed-up':>8} "
          f"{'mean batch':>10}  jobs per worker")
    for r in results:
        print(f"{r.workers:>7} {r.queued_s:>8.1f} {r.wall_s:>8.1f} {args.jobs / r.wall_s:>7.2f} "
              f"{base / r.wall_s:>7.2f}x {r.mean_batch:>10.2f}  {r.per_worker}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "sonify-tests"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--max-wait-ms", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
