"""Progress of a long command: bars on a terminal, plain lines anywhere else.

A command runs in named stages (loading a model, captioning, the diffusion steps, encoding);
each stage is timed, and a stage with a known number of steps reports each step. On a
terminal every stage is a tqdm bar that stays on screen when done (tqdm is already a
dependency of the model libraries, and draws on a terminal, with log lines printed above the
bars, without an extra package). Anywhere else (a pipe, a file, CI) each stage is one line
when it starts, plus a line per tenth of its steps: no carriage returns in logs.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from types import TracebackType
from typing import TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

StepCallback = Callable[[int, int], None]  # (steps done, steps in all)

PLAIN_UPDATES = 10  # plain lines per stage with steps, at most (one per tenth)
TICK_S = 0.5  # how often a stage without steps redraws its clock on a terminal
FALLBACK_SIZE = (80, 24)  # columns, rows


class StageProgress(ABC):
    """Times stages; subclasses show them. Use as a context manager around all stages."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.seconds: dict[str, float] = {}  # stage name -> wall time, in the order run

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    @contextmanager
    def stage(self, name: str, label: str, steps: int | None = None) -> Iterator[StepCallback]:
        """Run one stage: `label` is what the user reads; `steps`, if known, its step count.

        Yields the callback that reports steps (`Pipeline.run`'s `progress`).
        """
        started = time.perf_counter()
        try:
            with self._show(label, steps) as report:
                yield report
        finally:
            self.seconds[name] = time.perf_counter() - started

    @abstractmethod
    def _show(self, label: str, steps: int | None) -> AbstractContextManager[StepCallback]:
        """Display one stage while it runs; the context yields its step callback."""


class LineProgress(StageProgress):
    """One line per stage and per tenth of its steps: for pipes, files and CI logs."""

    def _print(self, text: str) -> None:
        print(f"sonify: {text}", file=self.stream, flush=True)

    @contextmanager
    def _show(self, label: str, steps: int | None) -> Iterator[StepCallback]:
        self._print(f"{label}...")
        shown = 0  # tenths of the steps already printed

        def report(step: int, total: int) -> None:
            nonlocal shown
            if total <= 0:
                return
            tenth = step * PLAIN_UPDATES // total
            if tenth > shown:
                shown = tenth
                self._print(f"{label}: step {step}/{total}")

        yield report


class BarProgress(StageProgress):
    """A tqdm bar per stage on a terminal; log lines go above the bars instead of through them."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._stack = ExitStack()

    def __enter__(self) -> BarProgress:
        self._stack.enter_context(logging_redirect_tqdm())
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()

    @contextmanager
    def _show(self, label: str, steps: int | None) -> Iterator[StepCallback]:
        size = _fixed_size(self.stream)
        shape = {"ncols": size and size[0], "nrows": size and size[1],
                 "dynamic_ncols": size is None, "leave": True}
        if steps is None:
            bar = tqdm(total=None, desc=label, file=self.stream, bar_format="{desc}: {elapsed}",
                       **shape)
        else:
            bar = tqdm(total=steps, desc=label, file=self.stream, unit="step", **shape)
        # tqdm redraws only when told: a stage without steps (a model loading) gets a clock
        # that keeps moving, so a long load does not look like a hang.
        done = threading.Event()
        ticker = threading.Thread(target=_tick, args=(bar, done), daemon=True)
        ticker.start()

        def report(step: int, total: int) -> None:
            bar.total = total
            bar.n = step
            bar.refresh()

        try:
            yield report
        finally:
            done.set()
            ticker.join()
            bar.close()


def _tick(bar: tqdm, done: threading.Event) -> None:
    while not done.wait(TICK_S):
        bar.refresh()


def _fixed_size(stream: TextIO) -> tuple[int, int] | None:
    """None where the terminal tells its size (tqdm then follows resizes), else 80 x 24.

    A terminal that reports 0 x 0 (a pseudo-terminal nobody sized, some consoles) would
    make tqdm cut every bar to nothing.
    """
    try:
        if os.get_terminal_size(stream.fileno()).columns > 0:
            return None
    except (OSError, ValueError):
        pass
    return FALLBACK_SIZE


def progress_for(stream: TextIO) -> StageProgress:
    """Bars when `stream` is a terminal, plain lines otherwise."""
    isatty = getattr(stream, "isatty", None)
    return BarProgress(stream) if callable(isatty) and isatty() else LineProgress(stream)
