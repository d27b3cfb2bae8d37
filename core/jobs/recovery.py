"""Taking up what the last run left: every recorded request gets one answer after a restart.

The same for both backends (the engine, core/jobs/engine.py, is a `Recovery`); where they
differ, the transport says so (`keeps_queue`, `only_process`). Each row left by the last
run goes one way:

- finished, its answer still owed or being sent: its outcome is handed to its platform's
  adapter to deliver (a done row whose clip is gone is rendered again, from its caption);
- received, its picture not fetched yet: handed to its platform's intake to fetch again;
- queued or running: followed where workers outlive this process (redis), else queued
  again from its row and spooled picture (local);
- anything that cannot go on (its picture is gone, nobody here can fetch it): interrupted,
  and its adapter apologises.

A row whose seed is missing (written by an older version) is given a random one, kept in
the row (`rows.seed_of`), whichever backend takes it up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from core.errors import GenerationFailed, UserFacingError
from core.jobs.cache import CachedClip
from core.jobs.contract import ReceivedHandler, RecoveredHandler
from core.jobs.events import Done, Failed, JobHandle
from core.jobs.journal import Journal
from core.jobs.request import JobRequest, Receipt
from core.jobs.rows import ended_row, outcome_of, placeholder_request, rebuild_request, seed_of
from core.jobs.spool import Spool
from core.jobs.transport import Transport
from core.records import RequestRecord, RequestStatus
from core.storage.request_log import RequestLog

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Recovery(ABC):
    """The recovery handlers adapters register, and taking up the last run's rows."""

    request_log: RequestLog
    journal: Journal
    transport: Transport
    spool: Spool
    _clock: Callable[[], float]

    def __init__(self) -> None:
        self._handlers: dict[str, RecoveredHandler] = {}
        self._intake_handlers: dict[str, ReceivedHandler] = {}
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._to_recover: list[RequestRecord] = []  # rows the last run left, for `resume`

    @abstractmethod
    async def _go_on(self, request: JobRequest, receipt: Receipt,
                     hit: CachedClip | None = None, key: str | None = None) -> JobHandle: ...

    @abstractmethod
    async def clip_files(self, record: RequestRecord) -> dict[str, Path] | None: ...

    @abstractmethod
    async def _patiently(self, what: str, op: Callable[[], Awaitable[T]]) -> T: ...

    @abstractmethod
    async def _clean_up(self, request_id: str) -> None: ...

    @abstractmethod
    def _fitted(self, request: JobRequest) -> JobRequest: ...

    async def resume_recovered(self) -> int:
        """Take up what the last run left; returns how many requests were handed to adapters."""
        records, self._to_recover = self._to_recover, []
        handed = 0
        for record in records:
            handed += await self._resume(record)
        if records:
            logger.warning("took up %d request(s) left by the last run", len(records))
        return handed

    async def _resume(self, record: RequestRecord) -> int:
        """Take up one row left by the last run; 1 if an adapter was handed it."""
        handler = self._handlers.get(record.platform)
        intake = self._intake_handlers.get(record.platform)
        if handler is None and intake is None and not self.transport.only_process:
            return 0  # the process that serves this platform takes it up
        if record.finished:  # its answer is owed: hand over the outcome to deliver
            if handler is None:
                return 0
            files = await self.clip_files(record) if record.status == RequestStatus.DONE else None
            if record.status != RequestStatus.DONE or files is not None:
                self._hand_over(handler, record, outcome_of(record, files))
                return 1
            # A done row whose clip is gone: render it again from its caption and seed.
        seed = await self._patiently(f"the seed of {record.id}",
                                     lambda: seed_of(self.request_log, record))
        record = dataclasses.replace(record, seed=seed)
        receipt = Receipt(record.id, record.created_at, seed)
        if record.status == RequestStatus.RECEIVED and not (record.caption or record.prompt):
            if intake is None or record.source is None:
                await self._interrupt(record, handler)
                return int(handler is not None)
            self.transport.hold(record, place=True)
            self._run_handler(intake(record, receipt), record.id)
            return 1
        if handler is None:
            await self._interrupt(record, None)
            return 0
        if (self.transport.keeps_queue and not record.finished
                and record.status != RequestStatus.RECEIVED):
            handle = await self.transport.follow(record.id)
        else:
            handle = await self._queue_again(record, receipt)
        if handle is None:
            await self._interrupt(record, handler)
        else:
            self._run_handler(handler(handle), record.id)
        return 1

    async def _queue_again(self, record: RequestRecord, receipt: Receipt) -> JobHandle | None:
        """Queue a row's job again from the row and its spooled picture (None: it cannot be)."""
        request = await self._patiently(f"the picture of {record.id}",
                                        lambda: rebuild_request(record, self.spool))
        if request is None:
            return None
        request = self._fitted(request)
        self.transport.hold(record, place=True)
        try:
            return await self._go_on(request, receipt, key=record.cache_key)
        except UserFacingError as error:  # refused now (its row says so): the adapter tells
            handle = JobHandle(record.id, request)
            handle.emit(Failed(error))
            return handle

    def _hand_over(self, handler: RecoveredHandler, record: RequestRecord,
                   outcome: Done | Failed) -> None:
        handle = JobHandle(record.id, placeholder_request(record))
        handle.emit(outcome)
        self._run_handler(handler(handle), record.id)

    async def _interrupt(self, record: RequestRecord, handler: RecoveredHandler | None) -> None:
        """End a row that cannot go on; its adapter (if any) apologises."""
        changes = ended_row(RequestStatus.INTERRUPTED, "interrupted", created_at=record.created_at,
                            finished_at=self._clock())
        await self._patiently(f"the outcome of request {record.id}",
                              lambda: self.request_log.update(record.id, **changes))
        await self._clean_up(record.id)
        self.journal.outcome(record.id, f"{record.platform}:{record.user_id}", record.source_kind,
                             RequestStatus.INTERRUPTED, reason="interrupted")
        if handler is None:
            logger.warning("request %s (%s) was interrupted and no adapter takes it",
                           record.id, record.platform)
            return
        self._hand_over(handler, record, Failed(GenerationFailed("interrupted by a restart",
                                                                 code="interrupted")))

    def _run_handler(self, work: Awaitable[None], request_id: str) -> None:
        """Run an adapter's recovery handler in the background; its failure is only logged."""

        async def call() -> None:
            try:
                await work
            except Exception:
                logger.exception("recovery handler failed for %s", request_id)

        task = asyncio.create_task(call())
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)
