"""`sonify run` as a real process for the end-to-end tests: started, killed, restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
# Generous for a loaded 2-core machine, yet bounded: a hung child fails the test.
EXIT_WITHIN_S = 60.0


def sonify_command() -> list[str]:
    script = Path(sys.executable).parent / "sonify"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def offline_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **extra}


class SonifyProcess:
    """One `sonify run --config PATH` child (or another command: `command`); its output goes
    to a log file, not a pipe (nobody reads a pipe until the end, and a full one blocks the
    child)."""

    def __init__(self, config: Path, log: Path, env: dict[str, str],
                 command: tuple[str, ...] = ("run",),
                 program: tuple[str, ...] | None = None) -> None:
        """`program`: what to run instead of `sonify` (a test harness around its main)."""
        self.config, self.log, self.env, self.command = config, log, env, command
        self.program = program
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> SonifyProcess:
        with self.log.open("ab") as sink:
            self.proc = await asyncio.create_subprocess_exec(
                *(self.program or sonify_command()), *self.command, "--config",
                str(self.config), env=self.env, cwd=ROOT, stdout=sink, stderr=sink)
        return self

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def text(self) -> str:
        return self.log.read_text("utf-8", "replace") if self.log.exists() else "(no log)"

    def tail(self) -> str:
        return self.text()[-3000:]

    async def kill(self) -> None:
        """SIGKILL: an out-of-memory kill, a power cut, `docker kill`."""
        assert self.proc is not None
        self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), EXIT_WITHIN_S)

    async def terminate(self) -> int:
        """SIGTERM and the exit code (killed if it does not exit in time)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), EXIT_WITHIN_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise

    async def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def unless_exited(self, step: Awaitable[T]) -> T:
        """Await `step`, but fail at once, with the child's log, if the child exits first."""
        assert self.proc is not None
        work = asyncio.ensure_future(step)
        exited = asyncio.ensure_future(self.proc.wait())
        await asyncio.wait({work, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            raise AssertionError(f"sonify {self.command[0]} exited early ({self.returncode}):"
                                 f"\n{self.tail()}")
        exited.cancel()
        try:
            return work.result()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- sonify run log ---\n{self.tail()}") from None
