"""The crash test's victim: an engine with the tiny models, serving jobs until it is killed.

`python -m tests.core.jobs.crash_worker DATA_DIR` submits a fixed mix of jobs, prints
`ACCEPTED <id>` once each submission returns (its row is written), `DONE <id>`
as results arrive, and `SLOW <n>` when the second model call starts; that call
then crawls (progress ticks, no end), so a SIGKILL lands mid-batch.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

from core.jobs.local import local_engine
from core.models.loading import ModelLoader
from core.storage.request_log import RequestLog
from tests.conftest import make_config
from tests.core.jobs.engine_support import image_request, picture, text_request

PLATFORM = "crash"


def crash_config(data_root: Path) -> Any:
    return make_config(data_root, jobs={"max_batch": 3, "max_wait_ms": 300,
                                        "per_user_concurrent": 20})


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


def requests(cfg: Any) -> list[Any]:
    """Nine jobs: distinct pictures, a repeated picture, text jobs."""
    out = [image_request(cfg, f"user{i % 3}", picture(300 + i), platform=PLATFORM,
                         reply_context={"n": i}) for i in range(5)]
    out.append(image_request(cfg, "user9", picture(302), platform=PLATFORM,
                             reply_context={"n": 5}))  # same picture as job 2
    out += [text_request(cfg, f"user{i}", f"thunder {i}", platform=PLATFORM,
                         reply_context={"n": 6 + i}) for i in range(3)]
    return out


async def main(data_root: Path) -> None:
    cfg = crash_config(data_root)
    pipeline = SlowAfterFirst(ModelLoader(cfg).pipeline())
    request_log = await RequestLog.open(cfg.database_url)
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
    for request in requests(cfg):
        handle = await engine.submit(request)
        print(f"ACCEPTED {handle.id}", flush=True)
        tasks.append(asyncio.create_task(report(handle)))
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
