"""`sonify run --config FILE` as a real process against the fake Discord, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from core.storage.request_log import RequestLog
from tests.bot.discord.conftest import TOKEN, png_bytes, read_clip
from tests.bot.discord.fake_discord import ALICE, WATCHED, FakeDiscord, Upload
from tests.conftest import tiny_toml

REPO = Path(__file__).resolve().parents[3]


def write_config(path: Path, fake: FakeDiscord, data_dir: Path) -> None:
    path.write_text(tiny_toml(data_dir, generation={"seconds": 1.5}, discord={
        "api_base_url": fake.api_url, "gateway_url": fake.gateway_url, "channels": [WATCHED],
        "sync_commands": False}), encoding="utf-8")


async def test_sonify_run_round_trip_and_sigterm(fake: FakeDiscord, tmp_path: Path,
                                                 tiny_pipeline: Any) -> None:
    # tiny_pipeline: the tiny models exist on disk before the process loads them.
    config = tmp_path / "sonify.toml"
    write_config(config, fake, tmp_path / "data")
    env = {**os.environ, "SONIFY_DISCORD_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "--config", str(config),
        cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output = b""
    try:
        await fake.until(lambda: fake.identified or proc.returncode is not None, timeout=60)
        assert fake.identified, "the bot never connected to the gateway"
        assert fake.identified[0]["token"] == TOKEN  # from the environment, not the file
        posted = await fake.send_message(WATCHED, ALICE, "", [Upload("s.png", png_bytes(90))])
        answer = await fake.until(lambda: [m for m in fake.replies_to(posted["id"])
                                           if m["attachments"]], timeout=60)
        audio, rate, kind = read_clip(fake.file(answer[0]["attachments"][0]))
        assert kind == "OGG/OPUS" and abs(len(audio) / rate - 1.5) < 0.05
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 60)
    log_text = output.decode(errors="replace")
    assert proc.returncode == 0, log_text[-3000:]
    assert "Traceback" not in log_text and TOKEN not in log_text

    log = await RequestLog.open(f"sqlite+aiosqlite:///{(tmp_path / 'data' / 'sonify.db')}")
    try:
        rows = await log.rows_since(0.0, ["status", "platform", "source_kind"])
    finally:
        await log.close()
    assert [tuple(r) for r in rows] == [("done", "discord", "attachment")]
