"""A process's Prometheus metrics: one registry, built at start-up and handed around.

Series (all `sonify_`, base units; README "Operating it" lists them with their labels):

- requests as they end, by platform, input kind, outcome and code — counted by the
  processes that answer requests (`sonify run`), from the journal's outcome lines
  (core/jobs/journal.py), which every outcome passes;
- stage seconds: fetch and decode (adapters, `stage`), caption, sound and encode, and the
  queue wait (the process that rendered the job: its journal line carries its timings),
  delivery (adapters);
- read when scraped (core/ops/sources.py): queue length, batch sizes, clip cache lookups,
  size and evictions, workers alive and jobs per worker, database and Redis errors.

No series is global: a test or a second service in one process has registries of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.context_managers import Timer
from prometheus_client.exposition import choose_encoder

from core.jobs.journal import OutcomeLine
from core.ops.sources import Sources

logger = logging.getLogger(__name__)

STAGES = ("fetch", "decode", "caption", "sound", "encode", "delivery")
OUTCOMES = ("done", "cache_hit", "refused", "failed", "interrupted")
# A request takes from a fraction of a second (a cached clip) to minutes (a long render).
REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# A rendered job's stage times, as the settling of a job records them (core/jobs/settle.py).
_TIMED_STAGES = {"caption_s": "caption", "sound_s": "sound", "encode_s": "encode"}


def _package_version() -> str:
    try:
        return version("sonify")
    except PackageNotFoundError:
        return "unknown"


Refresher = Callable[[], Awaitable[None]]


class Metrics:
    """The series of one process. `role`: "run" or "worker"; `answers`: this process
    answers requests (counts them as they end); `renders`: it renders jobs (times their
    stages). A process that does not render hears of outcomes only as rows read back (a
    line with no stage times): a rendering line in it is another part's (a worker run in
    the same process, as tests do), already counted there."""

    def __init__(self, *, role: str, answers: bool, renders: bool) -> None:
        self.role = role
        self.answers = answers
        self.renders = renders
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "sonify_requests", "Requests as they ended, by platform, input kind, outcome "
            "(done, cache_hit, refused, failed, interrupted) and code",
            ["platform", "kind", "outcome", "code"], registry=registry)
        self.request_seconds = Histogram(
            "sonify_request_seconds", "Seconds from a request's arrival to its outcome",
            ["platform", "outcome"], buckets=REQUEST_BUCKETS, registry=registry)
        self.stage_seconds = Histogram(
            "sonify_stage_seconds", "Seconds spent in each stage of a request",
            ["stage"], buckets=STAGE_BUCKETS, registry=registry)
        self.queue_wait_seconds = Histogram(
            "sonify_queue_wait_seconds", "Seconds a rendered job waited in the queue",
            buckets=REQUEST_BUCKETS, registry=registry)
        for stage in STAGES:  # every stage is a series from the start, for dashboards
            self.stage_seconds.labels(stage)
        Info("sonify_build", "This process's Sonify version and role",
             registry=registry).info({"version": _package_version(), "role": role})
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.sources = Sources()
        registry.register(self.sources)
        self._refreshers: list[Refresher] = []

    # what happens -------------------------------------------------------------------------

    def observe_outcome(self, line: OutcomeLine) -> None:
        """A request ended (the journal's listener)."""
        if self.answers and (self.renders or line.timings is None):
            self.requests.labels(line.platform, line.kind, line.outcome, line.code or "").inc()
            if line.outcome != "refused" and line.total_s is not None:
                self.request_seconds.labels(line.platform, line.outcome).observe(line.total_s)
        if self.renders and line.timings is not None and line.outcome == "done":
            wait = line.timings.get("queue_wait_s")
            if wait is not None:
                self.queue_wait_seconds.observe(wait)
            for key, stage in _TIMED_STAGES.items():
                seconds = line.timings.get(key)
                if seconds is not None:
                    self.stage_seconds.labels(stage).observe(seconds)

    def stage(self, name: str) -> Timer:
        """Times a stage: ``with metrics.stage("fetch"): ...``."""
        return self.stage_seconds.labels(name).time()

    def observe_stage(self, name: str, seconds: float) -> None:
        self.stage_seconds.labels(name).observe(seconds)

    # scraping -----------------------------------------------------------------------------

    def add_refresher(self, refresher: Refresher) -> None:
        """Something to read before each scrape that needs a network call (Redis)."""
        self._refreshers.append(refresher)

    async def refresh(self) -> None:
        for refresher in self._refreshers:
            try:
                await refresher()
            except Exception as exc:  # a scrape still answers, with what is known
                logger.debug("refreshing a metric failed: %s", exc)

    async def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) of a scrape: Prometheus' text format, or OpenMetrics when
        the scraper asks for it."""
        await self.refresh()
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
