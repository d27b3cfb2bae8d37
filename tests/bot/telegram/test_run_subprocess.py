"""`sonify run` as a real process: a photo in, a voice note out, SIGTERM, a clean exit."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from tests.bot.telegram.conftest import ANA, TOKEN, picture, private, voice_info
from tests.bot.telegram.fake_bot_api import FakeBotAPI
from tests.conftest import TINY_CACHE


def sonify_command() -> list[str]:
    script = Path(sys.executable).parent / "sonify"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


async def test_sonify_run_round_trip_and_sigterm(tmp_path: Path, fake: FakeBotAPI,
                                                 tiny_pipeline: object) -> None:
    # tiny_pipeline: makes sure the tiny models are built on disk before the child loads them.
    data = tmp_path / "data"
    config = tmp_path / "sonify.toml"
    config.write_text(f"""
[models]
preset = "tiny"
device = "cpu"
cache_dir = "{TINY_CACHE.as_posix()}"

[generation]
seconds = 1.0
steps = 2
caption_beams = 2
caption_max_tokens = 8

[images]
allow_private_networks = true

[jobs]
max_wait_ms = 20

[storage]
data_dir = "{data.as_posix()}"

[telegram]
api_base_url = "{fake.api_base}"
file_base_url = "{fake.file_base}"
poll_timeout_s = 1.0
progress_interval_s = 0.0
""", encoding="utf-8")
    env = {**os.environ, "SONIFY_TELEGRAM_TOKEN": TOKEN, "SONIFY_MODELS": "tiny",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = await asyncio.create_subprocess_exec(
        *sonify_command(), "run", "--config", str(config), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        update = await fake.push({"message": {
            "message_id": fake.new_message_id(), "date": 0, "chat": private(ANA), "from": ANA,
            "photo": [{"file_id": fake.add_file(picture()), "file_unique_id": "p",
                       "width": 96, "height": 64}]}})
        mid = update["message"]["message_id"]
        voice = await fake.wait_for("sendVoice", lambda c: c.reply_to == mid, within=120)
        assert voice_info(voice).subtype == "OPUS"
        await fake.wait_for("deleteMessage")  # the answer is complete
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log and TOKEN not in log
    with sqlite3.connect(data / "sonify.db") as db:
        rows = db.execute("SELECT platform, user_id, status FROM requests").fetchall()
    assert rows == [("telegram", str(ANA["id"]), "done")]
