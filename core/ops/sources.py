"""Metrics read when scraped, from the parts of a process that keep them.

The engines keep plain counts (the model runner its batch sizes, the clip cache its
lookups and evictions, the outage watch its errors, a Redis pool its failures); nothing in
them knows of Prometheus. `Sources` is the collector that turns them into series at each
scrape, so the engines need no metrics object handed through them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from core.jobs.cache import ClipCache
from core.jobs.model_runner import ModelRunner
from core.storage.outage import Outage

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

Family = Callable[[], Iterable[Metric]]


class Sources:
    """A Prometheus collector made of functions, each giving some families when scraped."""

    def __init__(self) -> None:
        self._families: list[Family] = []

    def add(self, family: Family) -> None:
        self._families.append(family)

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield from family()


def queue_length(length: Callable[[], int]) -> Family:
    def families() -> Iterable[Metric]:
        yield GaugeMetricFamily("sonify_queue_length", "Jobs waiting to be rendered",
                                value=length())
    return families


def database_errors(outage: Outage) -> Family:
    def families() -> Iterable[Metric]:
        errors = CounterMetricFamily(
            "sonify_database_errors", "Request log operations that failed because the "
            "database was unavailable (stopped, unreachable, locked, read-only) or damaged",
            labels=["kind"])
        for kind in ("unavailable", "damaged"):
            errors.add_metric([kind], outage.errors[kind])
        yield errors
    return families


def redis_errors(failures: Callable[[], int]) -> Family:
    def families() -> Iterable[Metric]:
        yield CounterMetricFamily(
            "sonify_redis_errors", "Redis commands and connection attempts that failed "
            "(Redis unreachable or not answering)", value=failures())
    return families


def clip_cache(cache: ClipCache) -> Family:
    def families() -> Iterable[Metric]:
        lookups = CounterMetricFamily("sonify_clip_cache_lookups",
                                      "Clip cache lookups, by result (hit, miss)",
                                      labels=["result"])
        for result in ("hit", "miss"):
            lookups.add_metric([result], cache.lookups[result])
        yield lookups
        yield CounterMetricFamily("sonify_clip_cache_evictions",
                                  "Clips evicted from the cache to keep it under its size",
                                  value=cache.evictions)
        if cache.size_bytes is not None:
            yield GaugeMetricFamily("sonify_clip_cache_bytes",
                                    "Size of the clip cache, as last counted",
                                    value=cache.size_bytes)
    return families


def batch_sizes(runner: ModelRunner) -> Family:
    def families() -> Iterable[Metric]:
        counts = runner.batch_sizes
        buckets: list[tuple[str, float]] = []
        for bound in BATCH_BUCKETS:
            buckets.append((str(float(bound)),
                            sum(n for size, n in counts.items() if size <= bound)))
        buckets.append(("+Inf", sum(counts.values())))
        yield HistogramMetricFamily(
            "sonify_batch_size", "Jobs rendered together in one batch",
            buckets=buckets, sum_value=sum(size * n for size, n in counts.items()))
    return families


def workers(alive: Callable[[], int] | None, jobs: Callable[[], dict[str, int]]) -> Family:
    """Workers alive (where this process sees them all) and jobs per worker."""

    def families() -> Iterable[Metric]:
        if alive is not None:
            yield GaugeMetricFamily("sonify_workers_alive",
                                    "Workers rendering for this service (heartbeats seen)",
                                    value=alive())
        per_worker = CounterMetricFamily("sonify_worker_jobs",
                                         "Jobs each worker has taken since it started",
                                         labels=["worker"])
        for name, count in sorted(jobs().items()):
            per_worker.add_metric([name], count)
        yield per_worker
    return families


def rendered_jobs(runner: ModelRunner) -> int:
    """Jobs handed to a model runner (the local backend's only worker)."""
    return sum(size * n for size, n in runner.batch_sizes.items())
