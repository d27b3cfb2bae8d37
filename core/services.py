"""The one object built at start-up and handed to every adapter (`Services`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from core.config import Config
from core.distributed.engine import RedisJobEngine
from core.intake.fetch import ImageFetcher
from core.jobs.contract import JobEngine
from core.jobs.engine import LocalJobEngine
from core.jobs.pruning import Pruner
from core.models.pipeline import Pipeline
from core.ops.health import Health
from core.ops.metrics import Metrics
from core.ops.wiring import Operations, for_run
from core.settings.service import ChatSettings
from core.stats.collect import collect_stats
from core.stats.render import render_stats_chart, render_stats_text
from core.storage.request_log import ChatFilter, RequestLog

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """Shared services; adapters take one of these and nothing global."""

    config: Config
    request_log: RequestLog
    engine: JobEngine
    fetcher: ImageFetcher
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
        try:
            engine: JobEngine
            if config.jobs.backend == "redis":  # `sonify worker`s render; this process serves
                engine = RedisJobEngine(config, request_log)
            else:
                engine = LocalJobEngine(config, request_log, pipeline_factory=pipeline_factory)
            await engine.start()
        except BaseException:
            await request_log.close()
            raise
        settings = ChatSettings(config, request_log.chat_settings)
        try:
            ops = await for_run(request_log, engine)
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
                   fetcher=ImageFetcher(config.images), pruner=pruner, ops=ops,
                   settings=settings)

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
