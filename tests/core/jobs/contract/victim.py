"""The crash test's victim: a service with the tiny models, taking requests until it is
SIGKILLed — through both entry points of the contract, on either backend.

`python -m tests.core.jobs.contract.victim BACKEND DATA_ROOT [DATABASE_URL REDIS_URL]`
submits pictures and words (`submit`: prints `ACCEPTED <id>` once each has returned, its
row written), then receives pictures still to fetch (`receive`: `RECEIVED <id>`), fetches
and submits all but the last (whose fetch "never ends"), and prints `DONE <id>` as results
arrive and `SLOW <n>` when the second model call starts. That call then crawls (progress
ticks, no end), so a SIGKILL lands mid-batch. With the redis backend the process is a
`sonify run` and a `sonify worker` in one: both die together.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

from core.config import Config
from core.distributed.transport import redis_engine
from core.distributed.worker import RenderWorker
from core.jobs.local import local_engine
from core.models.loading import ModelLoader
from core.storage.request_log import RequestLog
from tests.conftest import make_config
from tests.core.jobs.contract.harness import PLATFORM, REDIS_JOBS, fetch_request
from tests.core.jobs.engine_support import image_request, picture, text_request

CRASH_JOBS = {"max_batch": 3, "max_wait_ms": 300, "per_user_concurrent": 20}
FETCHED = 2  # of the received requests, how many are fetched and submitted before the kill


def crash_config(backend: str, data_root: Path, database_url: str = "",
                 redis_url: str = "") -> Config:
    if backend == "redis":
        return make_config(data_root / "adapter",
                           jobs={**CRASH_JOBS, **REDIS_JOBS, "backend": "redis",
                                 "redis_url": redis_url},
                           storage={"database_url": database_url})
    return make_config(data_root, jobs=CRASH_JOBS)


class SlowAfterFirst:
    """The real pipeline; from the second call on it crawls until the process dies."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.lock = threading.Lock()

    def run(self, inputs: Any, options: Any, progress: Any = None) -> Any:
        with self.lock:
            self.calls += 1
            call = self.calls
        if call >= 2:
            print(f"SLOW {len(inputs)}", flush=True)
            while True:
                time.sleep(0.05)
                if progress is not None:
                    progress(0, 1)
        return self.inner.run(inputs, options, progress)


def submitted(cfg: Config) -> list[Any]:
    """Nine jobs: distinct pictures, a repeated picture, words."""
    out = [image_request(cfg, f"user{i % 3}", picture(300 + i), platform=PLATFORM,
                         reply_context={"n": i}) for i in range(5)]
    out.append(image_request(cfg, "user9", picture(302), platform=PLATFORM,
                             reply_context={"n": 5}))  # the same picture as job 2
    out += [text_request(cfg, f"user{i}", f"thunder {i}", platform=PLATFORM,
                         reply_context={"n": 6 + i}) for i in range(3)]
    return out


def received(cfg: Config) -> list[Any]:
    """Three pictures still to fetch (the test's picture `n` of each source)."""
    return [fetch_request(cfg, f"fetch{i}", n=320 + i) for i in range(3)]


async def main(backend: str, data_root: Path, database_url: str, redis_url: str) -> None:
    cfg = crash_config(backend, data_root, database_url, redis_url)
    pipeline = SlowAfterFirst(ModelLoader(cfg).pipeline())
    request_log = await RequestLog.open(cfg.database_url)
    if backend == "redis":
        engine = redis_engine(cfg, request_log)
        worker_cfg = cfg.with_section("storage", data_dir=str(data_root / "worker"))
        worker = RenderWorker(worker_cfg, await RequestLog.open(cfg.database_url),
                              pipeline_factory=lambda: pipeline, name="victim")
        await worker.start()
    else:
        engine = local_engine(cfg, request_log, pipeline_factory=lambda: pipeline)
    await engine.start()
    print("READY", flush=True)

    async def report(handle: Any) -> None:
        try:
            await handle.result()
            print(f"DONE {handle.id}", flush=True)
        except Exception as exc:
            print(f"FAILED {handle.id} {exc}", flush=True)

    tasks = []
    for request in submitted(cfg):
        handle = await engine.submit(request)
        print(f"ACCEPTED {handle.id}", flush=True)
        tasks.append(asyncio.create_task(report(handle)))
    for n, request in enumerate(received(cfg)):
        receipt = await engine.receive(request)
        print(f"RECEIVED {receipt.id}", flush=True)
        if n < FETCHED:
            handle = await engine.submit(request.with_image(picture(request.source["n"])),
                                         receipt=receipt)
            tasks.append(asyncio.create_task(report(handle)))
    await asyncio.gather(*tasks)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    args = [*sys.argv[1:], "", ""]
    asyncio.run(main(args[0], Path(args[1]), args[2], args[3]))
