"""One owner per local request log: a second holder is refused with the first one named, the
lease of a process that was killed is free at once, and readers take none."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from bot.cli import main
from core.errors import RequestLogInUse
from core.storage.request_log import RequestLog

ROOT = Path(__file__).resolve().parents[3]
HOLDER = ("import asyncio, sys\n"
          "from core.storage.request_log import RequestLog\n"
          "async def hold():\n"
          "    log = await RequestLog.open(sys.argv[1])\n"
          "    await log.take_lease()\n"
          "    print('held', flush=True)\n"
          "    await asyncio.sleep(3600)\n"
          "asyncio.run(hold())\n")


async def test_a_second_holder_is_refused_with_the_first_named(log_url: str) -> None:
    first = await RequestLog.open(log_url)
    second = await RequestLog.open(log_url)
    try:
        await first.take_lease()
        with pytest.raises(RequestLogInUse) as refused:
            await second.take_lease()
        message = str(refused.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}, since " in message
        assert 'use [jobs] backend = "redis"' in message and "\n" not in message
        await first.close()  # the owner ends: the next one may take it
        await second.take_lease()
    finally:
        await first.close()
        await second.close()


async def test_a_killed_holders_lease_is_taken_over_at_once(log_url: str) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, log_url, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    request_log = await RequestLog.open(log_url)
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 60) == b"held\n"
        with pytest.raises(RequestLogInUse, match=f"pid {holder.pid} "):
            await request_log.take_lease()
        holder.kill()  # SIGKILL: nothing let go of on purpose
        await holder.wait()

        async def taken() -> None:
            while True:  # PostgreSQL ends the session once it sees the socket close
                try:
                    await request_log.take_lease()
                    return
                except RequestLogInUse:
                    await asyncio.sleep(0.05)

        await asyncio.wait_for(taken(), 30)
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await request_log.close()


async def test_readers_and_memory_logs_take_no_lease(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "data" / "sonify.db"
    owner = await RequestLog.open(f"sqlite+aiosqlite:///{path}")
    try:
        await owner.take_lease()
        config = tmp_path / "config.toml"
        config.write_text(f'[storage]\ndata_dir = "{path.parent}"\n', encoding="utf-8")
        assert await asyncio.to_thread(main, ["stats", "--config", str(config)]) == 0
        assert "Today: 0 requests" in capsys.readouterr().out
        memory = [await RequestLog.open("sqlite+aiosqlite:///:memory:") for _ in range(2)]
        for log in memory:
            await log.take_lease()  # nothing to share: nothing to hold
            await log.close()
    finally:
        await owner.close()
