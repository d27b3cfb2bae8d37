"""The model worker: runs batched pipeline calls in one thread and isolates failures.

All model calls go through one single-thread executor, so the event loop keeps
serving while a batch renders and the models are only ever used by one thread. The
pipeline factory is called lazily, once, in that thread (loading counts against no
job's timeout). A batch that raises is retried one job at a time so only the
poisoned job fails; an out-of-memory error splits the batch in halves; a call that
runs past the job timeout is cancelled at its next diffusion step (the progress
callback raises) and its jobs fail with code ``timeout``. Nothing a job does stops
the worker.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from core.errors import GenerationFailed, UserFacingError
from core.models.pipeline import Pipeline, PipelineInput, PipelineResult
from core.options import GenerationOptions

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


class _Cancelled(Exception):
    """Raised inside the model thread (from the progress callback) to abort a call."""


class _TimedOut(Exception):
    """A model call ran past the job timeout."""


class _LoadFailed(Exception):
    """The pipeline factory raised: no point retrying job by job."""


@dataclass(eq=False)
class WorkItem:
    """One job's share of a batch: its input and where its progress goes (on the loop)."""

    input: PipelineInput
    on_progress: ProgressFn | None = None
    tag: str = ""  # for logs (the request id)


@dataclass
class Outcome:
    """What one job got: a result (and the size of the call that made it) or an error."""

    result: PipelineResult | None = None
    error: UserFacingError | None = None
    batch_size: int = 1


def is_oom(exc: BaseException) -> bool:
    """True for CUDA out-of-memory errors (typed or the older RuntimeError text)."""
    torch = sys.modules.get("torch")  # without torch loaded there is no torch error either
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_cuda() -> None:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # freeing memory is best effort
        logger.debug("could not empty the CUDA cache", exc_info=True)


class ModelRunner:
    """Runs `Pipeline.run` for a list of work items in the model thread, never raising."""

    def __init__(self, factory: Callable[[], Pipeline], *, timeout_s: float,
                 grace_s: float | None = None) -> None:
        self._factory = factory
        self._pipeline: Pipeline | None = None
        self.timeout_s = timeout_s
        # How long a cancelled call may take to notice before its thread is abandoned.
        self.grace_s = min(timeout_s, 30.0) if grace_s is None else grace_s
        self._threads = 0
        self._executor = self._new_executor()
        self._cancel_all = threading.Event()
        self.model_busy_s = 0.0  # wall time spent inside Pipeline.run (for overhead figures)
        self.calls = 0
        self.batch_sizes: Counter[int] = Counter()  # batches handed in, by size (metrics)

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    async def run(self, items: Sequence[WorkItem], options: GenerationOptions) -> list[Outcome]:
        """One outcome per item, in order."""
        self.batch_sizes[len(items)] += 1
        return await self._run(list(items), options)

    async def preload(self) -> None:
        """Load the models now, in the model thread; raise whatever the factory raises."""

        def load() -> None:
            if self._pipeline is None:
                self._pipeline = self._factory()

        await asyncio.get_running_loop().run_in_executor(self._executor, load)

    def cancel_running(self) -> None:
        """Abort the current call at its next step (shutdown past its deadline)."""
        self._cancel_all.set()

    def close(self) -> None:
        self._cancel_all.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, items: list[WorkItem], options: GenerationOptions) -> list[Outcome]:
        try:
            results = await self._attempt(items, options)
            return [Outcome(result=r, batch_size=len(items)) for r in results]
        except _LoadFailed:
            return [_fail(item, "failed") for item in items]
        except _TimedOut:
            if len(items) == 1:
                logger.warning("job %s timed out after %.0f s", items[0].tag, self.timeout_s)
                return [_fail(items[0], "timeout")]
            logger.warning("batch of %d timed out; retrying its jobs one by one", len(items))
            return await self._one_by_one(items, options)
        except Exception as exc:
            if is_oom(exc):
                _free_cuda()
                if len(items) == 1:
                    logger.error("job %s ran out of memory alone", items[0].tag)
                    return [_fail(items[0], "failed")]
                half = len(items) // 2
                logger.warning("out of memory with a batch of %d; splitting it", len(items))
                return (await self._run(items[:half], options)
                        + await self._run(items[half:], options))
            if len(items) == 1:
                if isinstance(exc, UserFacingError):  # the pipeline refused this input
                    logger.info("job %s refused: %s", items[0].tag, _describe(exc))
                    return [Outcome(error=exc)]
                logger.error("job %s failed: %s", items[0].tag, _describe(exc), exc_info=exc)
                return [_fail(items[0], "failed")]
            logger.warning("batch of %d failed (%s); retrying its jobs one by one",
                           len(items), _describe(exc))
            return await self._one_by_one(items, options)

    async def _one_by_one(self, items: list[WorkItem], options: GenerationOptions
                          ) -> list[Outcome]:
        out: list[Outcome] = []
        for item in items:
            out.extend(await self._run([item], options))
        return out

    async def _attempt(self, items: list[WorkItem], options: GenerationOptions
                       ) -> list[PipelineResult]:
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        listeners = [i.on_progress for i in items if i.on_progress is not None]

        def fan_out(step: int, total: int) -> None:
            for listener in listeners:
                try:
                    listener(step, total)
                except Exception:  # an adapter's listener must not break the batch
                    logger.exception("progress listener failed")

        def progress(step: int, total: int) -> None:
            if cancel.is_set() or self._cancel_all.is_set():
                raise _Cancelled()
            if listeners:
                loop.call_soon_threadsafe(fan_out, step, total)

        if self._pipeline is None:
            # Loading is not part of any job's time: a slow first load (real models on a
            # cold disk) must not time the batch out and start a second load beside it.
            await loop.run_in_executor(self._executor, self._load)
        inputs = [i.input for i in items]
        future = loop.run_in_executor(self._executor, self._call, inputs, options, progress)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            cancel.set()
            await self._drain(future)
            raise _TimedOut() from None
        except asyncio.CancelledError:
            cancel.set()  # the engine gave up on this batch (shutdown); stop the thread soon
            future.add_done_callback(_retrieve)
            raise

    def _load(self) -> Pipeline:
        """The pipeline, built on first use in the model thread."""
        if self._pipeline is None:
            try:
                self._pipeline = self._factory()
            except BaseException as exc:  # e.g. a library exiting: still only a failed batch
                logger.error("loading the models failed: %s", _describe(exc), exc_info=exc)
                raise _LoadFailed() from exc
        return self._pipeline

    def _call(self, inputs: list[PipelineInput], options: GenerationOptions,
              progress: ProgressFn) -> list[PipelineResult]:
        pipeline = self._load()
        started = time.perf_counter()
        try:
            results = pipeline.run(inputs, options, progress)
        except Exception:
            raise
        except BaseException as exc:  # e.g. a library calling sys.exit(): still only a job failure
            raise RuntimeError(f"model call raised {type(exc).__name__}") from exc
        finally:
            self.model_busy_s += time.perf_counter() - started
            self.calls += 1
        if len(results) != len(inputs):
            raise RuntimeError(f"pipeline returned {len(results)} results for {len(inputs)} inputs")
        return list(results)

    async def _drain(self, future: asyncio.Future[Any]) -> None:
        """Wait for a cancelled call to stop; abandon its thread if it does not."""
        done, _ = await asyncio.wait({future}, timeout=self.grace_s)
        if done:
            if not future.cancelled():
                future.exception()  # retrieved: the timeout is what we report
            return
        logger.error("a timed-out model call ignores cancellation; starting a fresh model thread")
        future.add_done_callback(_retrieve)
        self._executor.shutdown(wait=False)
        self._executor = self._new_executor()

    def _new_executor(self) -> ThreadPoolExecutor:
        self._threads += 1
        return ThreadPoolExecutor(1, thread_name_prefix=f"sonify-model-{self._threads}")


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _fail(item: WorkItem, code: str) -> Outcome:
    message = "generation timed out" if code == "timeout" else "generation failed"
    return Outcome(error=GenerationFailed(message, code=code))


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
