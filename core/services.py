"""What the command line builds: the one object handed to every adapter (`Services`), a
`sonify worker`, the statistics of `sonify stats` — so that adapters and commands reach the
request log and the backends only through here and the contract (core/jobs/contract.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Config
from core.distributed import worker as workers
from core.distributed.heartbeat import Heartbeat
from core.distributed.redis_queue import connect
from core.distributed.transport import redis_engine
from core.intake.fetch import ImageFetcher
from core.jobs.contract import ChannelCursors, JobEngine, ServiceKeys, ShareLinks
from core.jobs.journal import Journal
from core.jobs.local import local_engine
from core.jobs.pruning import Pruner
from core.models.pipeline import Pipeline
from core.ops.health import Health
from core.ops.metrics import Metrics
from core.ops.wiring import Operations, for_run, for_worker
from core.settings.service import ChatSettings
from core.stats.collect import collect_stats
from core.stats.render import render_stats_chart, render_stats_text
from core.storage.migrate import sqlite_file
from core.storage.ownership import check_free
from core.storage.request_log import ChatFilter, RequestLog

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """Shared services; adapters take one of these and nothing global.

    Adapters use the job engine and the small services of the contract (core/jobs/contract.py):
    share links, channel cursors, service keys. `request_log` is for the statistics and
    tests; no adapter reaches into it (tests/test_project.py checks that).
    """

    config: Config
    request_log: RequestLog
    engine: JobEngine
    fetcher: ImageFetcher
    share_links: ShareLinks
    cursors: ChannelCursors
    keys: ServiceKeys
    pruner: Pruner | None = field(default=None)
    # Settings server and group admins set in chat (in memory; see core/settings).
    settings: ChatSettings | None = field(default=None)
    # This process's metrics and health checks (core/ops): the one registry it has.
    ops: Operations = field(default_factory=lambda: Operations(
        Metrics(role="run", answers=False, renders=False), Health()))

    @classmethod
    async def create(cls, config: Config, *,
                     pipeline_factory: Callable[[], Pipeline] | None = None) -> Services:
        """Open the request log (migrating it), start the engine; models load on first use."""
        if pipeline_factory is None:
            def pipeline_factory() -> Pipeline:
                from core.models.loading import ModelLoader

                return ModelLoader(config).pipeline()

        config.data_dir.mkdir(parents=True, exist_ok=True)
        request_log = await RequestLog.open(config.database_url,
                                           outage_grace_s=config.storage.outage_grace_s)
        journal = Journal()  # each request's outcome: its log line, and the metrics
        try:
            engine: JobEngine
            if config.jobs.backend == "redis":  # `sonify worker`s render; this process serves
                engine = redis_engine(config, request_log, journal=journal)
            else:
                engine = local_engine(config, request_log, pipeline_factory=pipeline_factory,
                                      journal=journal)
            await engine.start()
        except BaseException:
            await request_log.close()
            raise
        settings = ChatSettings(config, request_log.chat_settings)
        try:
            ops = await for_run(request_log, engine, journal)
            await settings.start()
        except BaseException:
            await settings.stop()
            await engine.stop()
            await request_log.close()
            raise
        # `[storage] keep_days`: old rows and clips go in the background (never with 0).
        pruner = Pruner(request_log, config.data_dir / "cache", config.storage.keep_days)
        pruner.start()
        return cls(config=config, request_log=request_log, engine=engine,
                   fetcher=ImageFetcher(config.images), share_links=request_log.share_links,
                   cursors=request_log.cursors, keys=request_log.blobs, pruner=pruner,
                   ops=ops, settings=settings)

    async def close(self) -> None:
        """Stop the pruning and the engine (if still running), close the fetcher and the log."""
        self.ops.close()
        if self.settings is not None:
            await self.settings.stop()
        if self.pruner is not None:
            await self.pruner.stop()
        await self.engine.stop()
        try:
            await self.fetcher.close()
        finally:
            await self.request_log.close()

    @property
    def chat_settings(self) -> ChatSettings:
        """The chat settings (made on first use where `Services` was built by hand)."""
        if self.settings is None:
            self.settings = ChatSettings(self.config, self.request_log.chat_settings)
        return self.settings

    async def stats_report(self, lang: str = "en", *, chats: ChatFilter | None = None,
                           place: str | None = None) -> tuple[str, bytes]:
        """(stats text, PNG chart) for an admin's reply, in `lang`: everything, or only
        `chats`' requests (a server's channels, a group) for that place's admins."""
        stats = await collect_stats(self.request_log, self.engine.queue_length(), chats=chats)
        png = await asyncio.to_thread(render_stats_chart, stats, lang)
        return render_stats_text(stats, lang, place), png


def default_worker_name() -> str:
    """A worker's name when none is given: its host and process id."""
    return workers.default_worker_name()


def check_log_free(config: Config) -> None:
    """RequestLogInUse (naming the holder) when another process owns the local request log."""
    if config.jobs.backend == "local":
        check_free(config.database_url)


def log_file(config: Config) -> Path | None:
    """The request log's file, where it is a SQLite file (None for other databases)."""
    return sqlite_file(config.database_url)


async def stats_summary(config: Config, chats: ChatFilter | None = None) -> str:
    """`sonify stats`: the request log's summary, read where the bots write it (only `chats`'
    requests, if given: a group, a server's channels)."""
    request_log = await RequestLog.open(config.database_url)
    try:
        stats = await collect_stats(request_log, chats=chats)
        return render_stats_text(stats, place=f"{chats[0]}:{','.join(chats[1])}"
                                 if chats else None)
    finally:
        await request_log.close()


async def run_worker(config: Config, *, name: str | None, stop: asyncio.Event,
                     pipeline_factory: Callable[[], Pipeline],
                     serving: Callable[[Operations], AbstractAsyncContextManager[None]]
                     | None = None) -> None:
    """`sonify worker`: load the models, then render jobs from the queue until `stop`.

    Its heartbeat (core/distributed/heartbeat.py) goes on meanwhile, on a connection of its
    own; `serving` (the operator's routes, `--metrics-port`) is entered before the models
    load and left before the request log closes."""
    request_log = await RequestLog.open(config.database_url,
                                       outage_grace_s=config.storage.outage_grace_s)
    if request_log.is_sqlite:
        logger.warning("the request log is SQLite: workers on other machines cannot share "
                       "it; set [storage] database_url to PostgreSQL (README)")
    heartbeat: Heartbeat | None = None
    try:
        worker = workers.RenderWorker(config, request_log, name=name,
                                      pipeline_factory=pipeline_factory)
        # Its own connection: the heartbeat goes on while the worker's is busy or away.
        heartbeat = Heartbeat(await connect(config.jobs.redis_url), worker.name,
                              jobs=lambda: worker.taken,
                              models_loaded=lambda: worker.runner.loaded)
        heartbeat.start()
        ops = await for_worker(request_log, worker, heartbeat)
        try:
            async with serving(ops) if serving is not None else contextlib.nullcontext():
                await worker.load_models()  # before taking a job: a missing model is told
                await worker.run(stop)
        finally:
            ops.close()
    finally:
        if heartbeat is not None:
            await heartbeat.stop()
            await heartbeat.pool.aclose()
        await request_log.close()
