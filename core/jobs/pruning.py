"""Retention in the background: rows and clips older than `[storage] keep_days` go.

Every `sonify run` process prunes the request log (one at a time where they share
PostgreSQL; see core/storage/retention.py for why a row is counted once whoever prunes it),
a small batch per transaction with a pause between batches, so requests keep being
answered meanwhile. Each process — `sonify worker`s too — then deletes the files of its
own clip cache whose clip is no longer indexed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.storage.request_log import RequestLog

logger = logging.getLogger(__name__)

DAY_S = 86_400.0
BATCH = 500  # rows (or clips) per transaction: milliseconds of a writer's time
PAUSE_S = 0.05  # between batches, so other writers get their turn
EVERY_S = 3_600.0
FIRST_AFTER_S = 60.0  # after start-up: let the service settle (and recover) first


@dataclass(frozen=True)
class Pruned:
    """What one pass removed."""

    rows: int = 0
    clips: int = 0
    files: int = 0


class Pruner:
    """Removes finished rows and unused clips older than `keep_days`, now and then."""

    def __init__(self, request_log: RequestLog, cache_root: Path, keep_days: int, *,
                 prune_database: bool = True, clock: Callable[[], float] = time.time,
                 every_s: float = EVERY_S, first_after_s: float = FIRST_AFTER_S,
                 batch: int = BATCH, pause_s: float = PAUSE_S) -> None:
        self.request_log = request_log
        self.cache_root = Path(cache_root)
        self.keep_days = keep_days
        self.prune_database = prune_database
        self.every_s, self.first_after_s = every_s, first_after_s
        self.batch, self.pause_s = batch, pause_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Prune now and then until `stop` (nothing at all with keep_days = 0)."""
        if self.keep_days > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="sonify-pruning")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        await asyncio.sleep(self.first_after_s)
        while True:
            try:
                await self.prune()
            except Exception as exc:  # the database away, a folder unreadable: next time
                logger.warning("pruning the request log failed (%s: %s); trying again in "
                               "%.0f min", type(exc).__name__, exc, self.every_s / 60)
            await asyncio.sleep(self.every_s)

    async def prune(self) -> Pruned:
        """One pass: rows, clips, then this machine's orphaned clip files."""
        before = self._clock() - self.keep_days * DAY_S
        rows = clips = files = 0
        retention = self.request_log.retention
        if self.prune_database:
            async with retention.exclusive() as mine:
                if not mine:  # another process prunes the shared log right now
                    logger.debug("pruning: another process is at it")
                while mine and (count := await retention.prune_requests(before, self.batch)):
                    rows += count
                    await asyncio.sleep(self.pause_s)
                keep = await retention.needed_clips() if mine else set()
                while mine and (gone := await retention.prune_clips(before, self.batch, keep)):
                    clips += len(gone)
                    files += await asyncio.to_thread(self._unlink, [
                        name for clip in gone for name in clip.values()])
                    await asyncio.sleep(self.pause_s)
        files += await self._sweep(before)
        if rows or clips or files:
            logger.info("pruned %d request row(s) and %d clip(s) (%d file(s)) older than %d "
                        "days; their counts are kept as daily totals", rows, clips, files,
                        self.keep_days)
        return Pruned(rows, clips, files)

    def _unlink(self, names: list[str]) -> int:
        removed = 0
        for name in names:
            path = self.cache_root / Path(name).name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    async def _sweep(self, before: float) -> int:
        """Delete this machine's files of clips pruned (perhaps by another process)."""
        by_clip = await asyncio.to_thread(self._old_files, before)
        removed = 0
        ids = sorted(by_clip)
        for start in range(0, len(ids), self.batch):
            chunk = ids[start:start + self.batch]
            known = await self.request_log.retention.known_clips(chunk)
            removed += await asyncio.to_thread(
                self._unlink, [name for clip in chunk if clip not in known
                               for name in by_clip[clip]])
        return removed

    def _old_files(self, before: float) -> dict[str, list[str]]:
        """This machine's clip files last written before `before`, by clip id."""
        found: dict[str, list[str]] = {}
        if not self.cache_root.is_dir():
            return found
        for entry in self.cache_root.iterdir():
            try:
                if entry.is_file() and entry.stat().st_mtime < before:
                    found.setdefault(entry.name.split(".", 1)[0], []).append(entry.name)
            except FileNotFoundError:  # removed meanwhile (cache eviction)
                continue
        return found
