"""One service, either backend: the contract suite's tests are written once against this.

A `Backend` starts a service the way `sonify` does — `local`: one engine that renders (a
SQLite log); `redis`: the engine of a `sonify run` process plus one `sonify worker` in this
process (PostgreSQL, a real redis-server) — and knows the few things that differ in how a
test looks at it: where a waiting picture is kept, and how its database goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.config import Config
from core.distributed.transport import redis_engine
from core.distributed.worker import RenderWorker
from core.jobs.engine import Engine
from core.jobs.events import JobHandle
from core.jobs.local import local_engine
from core.jobs.request import JobRequest, Receipt, received_request
from core.options import GenerationOptions
from core.records import Platform, RequestRecord
from core.storage.request_log import RequestLog
from tests.conftest import make_config
from tests.core.jobs.engine_support import Handed, picture
from tests.local_servers import PostgresServer, RedisServer, Unwritable, sqlite_files

PLATFORM = Platform.TELEGRAM
# The redis backend's settings for tests: workers hand lost jobs over within seconds,
# adapters compare their rows often, a worker waits a little for a batch to fill.
REDIS_JOBS = {"redeliver_after_s": 5.0, "poll_interval_s": 0.2, "max_wait_ms": 200}


def fetch_request(config: Any, user: str, *, n: int = 1, key: str | None = None,
                  owed: bool = True) -> JobRequest:
    """A request whose picture is still to be fetched, as a chat adapter receives it."""
    return JobRequest(platform=PLATFORM, user_id=user, chat_id=f"chat-{user}",
                      source_kind="photo",
                      options=GenerationOptions.from_config(config.generation),
                      source={"kind": "test", "n": n}, dedupe_key=key, answer_owed=owed,
                      reply_context={"where": user})


class Fault(Protocol):
    """The request log's database made unusable (`apply`) and usable again (`restore`)."""

    def apply(self) -> None: ...

    def restore(self) -> None: ...


@dataclass
class Service:
    """A started service: its engine, its request log, and (redis) its worker."""

    config: Config
    engine: Engine
    request_log: RequestLog
    worker: RenderWorker | None = None
    fetched: list[JobHandle] = field(default_factory=list)  # jobs of rows fetched again

    @property
    def outage_noticed(self) -> bool:
        """The process that settles jobs has seen its database go away."""
        settling = self.worker.request_log if self.worker is not None else self.request_log
        return settling.outage.down

    async def until_status(self, request_id: str, status: str) -> None:
        """Until the request's row says `status` (a worker elsewhere may write it a moment
        after its event arrives)."""

        async def status_now() -> str | None:
            row = await self.request_log.get(request_id)
            return row.status if row is not None else None

        async with asyncio.timeout(30):
            while await status_now() != status:  # noqa: ASYNC110 (another process's rows)
                await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (a deadline)
        try:
            await self.engine.stop(timeout)
            if self.worker is not None:
                await self.worker.stop(timeout)
        finally:
            if self.worker is not None:
                await self.worker.request_log.close()
            await self.request_log.close()


class Backend:
    """How tests start a service of one backend (see the module docstring)."""

    name: str

    def __init__(self, root: Path) -> None:
        self.root = root

    def config(self, **sections: dict[str, Any]) -> Config:
        raise NotImplementedError

    async def _worker(self, config: Config, pipeline: Any) -> RenderWorker | None:
        return None

    def _engine(self, config: Config, request_log: RequestLog, pipeline: Any,
                clock: Callable[[], float] | None) -> Engine:
        raise NotImplementedError

    async def start(self, config: Config, pipeline: Any, *,
                    clock: Callable[[], float] | None = None) -> Service:
        """Open the log, start the engine (and the worker), as `sonify` does."""
        request_log = await RequestLog.open(config.database_url,
                                           outage_grace_s=config.storage.outage_grace_s)
        try:
            engine = self._engine(config, request_log, pipeline, clock)
            await engine.start()
            worker = await self._worker(config, pipeline)
        except BaseException:
            await request_log.close()
            raise
        return Service(config, engine, request_log, worker)

    @asynccontextmanager
    async def running(self, config: Config, pipeline: Any, *,
                      clock: Callable[[], float] | None = None) -> AsyncIterator[Service]:
        service = await self.start(config, pipeline, clock=clock)
        try:
            yield service
        finally:
            gate = getattr(pipeline, "gate", None)
            if gate is not None:
                gate.set()  # a failed test must not leave the model thread parked
            await service.stop()

    async def restart(self, config: Config, pipeline: Any) -> tuple[Service, list[JobHandle]]:
        """A service started again after a stop or a crash, and the jobs it handed over:
        outcomes and re-runs (`on_recovered`), and rows whose pictures were fetched again
        (`on_received`: the test's picture `n` of the row's source)."""
        service = await self.start(config, pipeline)
        handed = Handed()
        engine = service.engine

        async def fetch_again(record: RequestRecord, receipt: Receipt) -> None:
            request = received_request(record)
            assert request is not None and record.source is not None
            handle = await engine.submit(request.with_image(picture(int(record.source["n"]))),
                                         receipt=receipt)
            service.fetched.append(handle)
            await handed(handle)

        engine.on_recovered(PLATFORM, handed)
        engine.on_received(PLATFORM, fetch_again)
        try:
            await handed.until(await engine.resume_recovered())
        except BaseException:
            await service.stop()
            raise
        return service, handed.handles

    async def spooled(self, config: Config) -> set[str]:
        """Ids of the requests whose pictures wait for their jobs."""
        raise NotImplementedError

    async def lose_picture(self, config: Config, request_id: str) -> None:
        """A waiting picture gone (a disk emptied, a table restored from an old copy)."""
        raise NotImplementedError

    async def forget_clip(self, service: Service, record: RequestRecord) -> None:
        """A done request's clip gone from every cache while the service was stopped."""
        names = list((record.files or {}).values())
        for folder in (self.root / "data" / "cache", self.root / "adapter" / "data" / "cache",
                       self.root / "worker" / "cache"):
            for name in names:
                (folder / name).unlink(missing_ok=True)
        request_log = await RequestLog.open(service.config.database_url)
        try:
            await request_log.clips.delete([name.split(".", 1)[0] for name in names])
        finally:
            await request_log.close()

    def fault(self, service: Service) -> Fault:
        raise NotImplementedError


class LocalBackend(Backend):
    name = "local"

    def config(self, **sections: dict[str, Any]) -> Config:
        return make_config(self.root, **sections)

    def _engine(self, config: Config, request_log: RequestLog, pipeline: Any,
                clock: Callable[[], float] | None) -> Engine:
        extra = {"clock": clock} if clock is not None else {}
        return local_engine(config, request_log, pipeline_factory=lambda: pipeline, **extra)

    async def spooled(self, config: Config) -> set[str]:
        folder = config.data_dir / "spool"
        return {p.stem for p in folder.glob("*.png")} if folder.is_dir() else set()

    async def lose_picture(self, config: Config, request_id: str) -> None:
        (config.data_dir / "spool" / f"{request_id}.png").unlink()

    def fault(self, service: Service) -> Fault:
        Unwritable.check(self.root)
        return sqlite_files(Path(service.request_log.db.url.database or ""))


class RedisBackend(Backend):
    name = "redis"

    def __init__(self, root: Path, postgres: PostgresServer, redis: RedisServer) -> None:
        super().__init__(root)
        self.postgres = postgres
        self.redis = redis
        self.database_url = postgres.new_database()

    def config(self, **sections: dict[str, Any]) -> Config:
        jobs = {"backend": "redis", "redis_url": self.redis.url, **REDIS_JOBS,
                **sections.pop("jobs", {})}
        storage = {"database_url": self.database_url, **sections.pop("storage", {})}
        return make_config(self.root / "adapter", jobs=jobs, storage=storage, **sections)

    def _engine(self, config: Config, request_log: RequestLog, pipeline: Any,
                clock: Callable[[], float] | None) -> Engine:
        extra = {"clock": clock} if clock is not None else {}
        return redis_engine(config, request_log, **extra)

    async def _worker(self, config: Config, pipeline: Any) -> RenderWorker:
        # A worker on a machine of its own: its clip files are its own.
        worker_config = config.with_section("storage", data_dir=str(self.root / "worker"))
        request_log = await RequestLog.open(worker_config.database_url,
                                           outage_grace_s=config.storage.outage_grace_s)
        worker = RenderWorker(worker_config, request_log, pipeline_factory=lambda: pipeline,
                              name="w1")
        try:
            await worker.start()
        except BaseException:
            await request_log.close()
            raise
        return worker

    async def spooled(self, config: Config) -> set[str]:
        request_log = await RequestLog.open(config.database_url)
        try:
            return set(await request_log.blobs.picture_ids())
        finally:
            await request_log.close()

    async def lose_picture(self, config: Config, request_id: str) -> None:
        request_log = await RequestLog.open(config.database_url)
        try:
            await request_log.blobs.delete_picture(request_id)
        finally:
            await request_log.close()

    def fault(self, service: Service) -> Fault:
        return _Halted(self.postgres)


class _Halted:
    """PostgreSQL stopped as an operator would (`pg_ctl stop -m fast`) and started again."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.halted = False

    def apply(self) -> None:
        self.server.halt()
        self.halted = True

    def restore(self) -> None:
        if self.halted:
            self.server.resume()
            self.halted = False


async def nothing_spooled(backend: Backend, config: Config) -> None:
    """Until no picture waits (a worker drops one just after its job's answer is out)."""
    async with asyncio.timeout(30):
        while await backend.spooled(config):  # noqa: ASYNC110 (another process's rows)
            await asyncio.sleep(0.05)


async def until(check: Callable[[], bool], limit_s: float = 60.0) -> None:
    """Until `check()` holds: a state another party (a retry loop, a worker) brings about."""
    async with asyncio.timeout(limit_s):
        while not check():  # noqa: ASYNC110 (no event to wait on: another party's retries)
            await asyncio.sleep(0.02)
