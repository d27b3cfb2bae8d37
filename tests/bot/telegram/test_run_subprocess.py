"""`sonify run` as a real process: a photo in, a voice note out, SIGTERM, a clean exit."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from tests.bot.telegram.conftest import ANA, TOKEN, picture, private, voice_info
from tests.bot.telegram.fake_bot_api import FakeBotAPI
from tests.conftest import tiny_toml

T = TypeVar("T")
# Generous for a loaded 2-core machine, yet bounded: a hung child fails the test.
ANSWER_WITHIN_S = 120.0
EXIT_WITHIN_S = 60.0


def sonify_command() -> list[str]:
    script = Path(sys.executable).parent / "sonify"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def log_tail(path: Path) -> str:
    return path.read_text("utf-8", "replace")[-3000:] if path.exists() else "(no log)"


async def unless_exited(proc: asyncio.subprocess.Process, step: Awaitable[T], log: Path) -> T:
    """Await `step`, but fail at once, with the child's log, if the child exits first."""
    work = asyncio.ensure_future(step)
    exited = asyncio.ensure_future(proc.wait())
    await asyncio.wait({work, exited}, return_when=asyncio.FIRST_COMPLETED)
    if not work.done():
        work.cancel()
        raise AssertionError(f"sonify run exited early ({proc.returncode}):\n{log_tail(log)}")
    exited.cancel()
    try:
        return work.result()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- sonify run log ---\n{log_tail(log)}") from None


async def test_sonify_run_round_trip_and_sigterm(tmp_path: Path, fake: FakeBotAPI,
                                                 tiny_pipeline: object) -> None:
    # tiny_pipeline: makes sure the tiny models are built on disk before the child loads them.
    data = tmp_path / "data"
    config = tmp_path / "sonify.toml"
    config.write_text(tiny_toml(data, telegram={
        "api_base_url": fake.api_base, "file_base_url": fake.file_base, "poll_timeout_s": 1.0,
        "progress_interval_s": 0.0}), encoding="utf-8")
    env = {**os.environ, "SONIFY_TELEGRAM_TOKEN": TOKEN, "SONIFY_MODELS": "tiny",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = tmp_path / "sonify-run.log"
    # A file, not a pipe: nobody reads a pipe until the end, and a full one blocks the child.
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            *sonify_command(), "run", "--config", str(config), env=env,
            stdout=sink, stderr=sink)
    try:
        update = await fake.push({"message": {
            "message_id": fake.new_message_id(), "date": 0, "chat": private(ANA), "from": ANA,
            "photo": [{"file_id": fake.add_file(picture()), "file_unique_id": "p",
                       "width": 96, "height": 64}]}})
        mid = update["message"]["message_id"]
        voice = await unless_exited(proc, fake.wait_for(
            "sendVoice", lambda c: c.reply_to == mid, within=ANSWER_WITHIN_S), log)
        assert voice_info(voice).subtype == "OPUS"
        # The answer is complete once the status message is gone.
        await unless_exited(proc, fake.wait_for("deleteMessage", within=30), log)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), EXIT_WITHIN_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log_tail(log) if proc.returncode else log.read_text("utf-8", "replace")
    assert proc.returncode == 0, text
    assert "Traceback" not in text and TOKEN.split(":")[1] not in text
    assert "telegram: stopped" in text  # the adapter shut down, not just the process
    with sqlite3.connect(data / "sonify.db") as db:
        rows = db.execute("SELECT platform, user_id, status FROM requests").fetchall()
    assert rows == [("telegram", str(ANA["id"]), "done")]
