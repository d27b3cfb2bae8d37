"""`make run` for a newcomer: no config, no tokens, tiny models → the web page, end to end."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest
import soundfile as sf
from PIL import Image

from core.config import load_config


async def read_until(stream: asyncio.StreamReader, marker: str) -> str:
    """Read lines until one holds `marker`; return everything read."""
    seen: list[str] = []
    while True:
        line = (await stream.readline()).decode("utf-8", "replace")
        if not line:
            raise AssertionError("process ended before printing: " + "".join(seen))
        seen.append(line)
        if marker in line:
            return "".join(seen)


def test_without_config_the_page_is_on_localhost_8080(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """What `make run` serves with nothing configured (the end-to-end run below moves only
    the port, so that a busy 8080 on the test machine neither skips nor breaks it)."""
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert (config.web_enabled, config.web.host, config.web.port) == (True, "127.0.0.1", 8080)
    assert config.data_dir == Path("data")


async def test_run_without_tokens_serves_the_page_and_renders_offline(
        tmp_path: Path, tiny_pipeline: object) -> None:
    # tiny_pipeline: the tiny models exist on disk before the child process needs them.
    # The only setting: port 0, so the system picks a free one and the page prints it. The
    # file is the one `sonify run` reads from the current folder, as `make run` does.
    (tmp_path / "config.toml").write_text("[web]\nport = 0\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if k not in ("SONIFY_TELEGRAM_TOKEN", "SONIFY_DISCORD_TOKEN", "SONIFY_WEB_TOKEN")}
    env.update(SONIFY_MODELS="tiny", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(120):
            printed = await read_until(proc.stdout, "Sonify web page:")
        found = re.search(r"Sonify web page: (http://127\.0\.0\.1:(\d+)/)", printed)
        assert found and int(found.group(2)) != 0, printed
        address = found.group(1)
        picture = io.BytesIO()
        Image.new("RGB", (80, 60), (200, 120, 40)).save(picture, "PNG")
        async with aiohttp.ClientSession() as http:
            async with http.get(address) as page:
                assert page.status == 200 and "<form" in await page.text()
            form = aiohttp.FormData()
            form.add_field("image", picture.getvalue(), filename="p.png",
                           content_type="image/png")
            form.add_field("seconds", "1")
            async with http.post(address + "api/jobs", data=form) as created:
                assert created.status == 202, await created.text()
                job_id = (await created.json())["id"]
            async with http.get(f"{address}api/jobs/{job_id}/events") as events:
                stream = (await asyncio.wait_for(events.text(), 120))
            assert "event: done" in stream
            async with http.get(f"{address}api/jobs/{job_id}") as status:
                job = await status.json()
            assert job["status"] == "done" and job["caption"]
            async with http.get(address.rstrip("/") + job["audio"]["ogg"]) as audio:
                clip = await audio.read()
        data, rate = sf.read(io.BytesIO(clip))
        assert abs(len(data) / rate - 1.0) <= 0.1
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    # Start and stop told in plain words: no schema revisions, no method names, no warnings
    # for what is normal; the platforms and why the others are off; how to stop; "stopped".
    said = [line.split(" ", 3)[-1] for line in log.splitlines()]  # without the timestamp
    assert "core.storage.migrate: created a new request log" in said
    assert ("bot.app: Telegram: off (no token: [telegram] token or SONIFY_TELEGRAM_TOKEN); "
            "Discord: off (no token: [discord] token or SONIFY_DISCORD_TOKEN); web page: on"
            ) in said
    assert "bot.app: Sonify is running: press Ctrl-C to stop" in said
    stopping = said.index("bot.app: stopping… the running batch finishes, queued requests "
                          "wait for the next start (Ctrl-C again exits at once)")
    assert said[-1] == "bot.app: stopped" and stopping < len(said) - 1
    assert not [line for line in said if "schema" in line or "()" in line
                or line.startswith("WARNING bot.app")]
    with sqlite3.connect(tmp_path / "data" / "sonify.db") as db:
        rows = db.execute("SELECT platform, status FROM requests").fetchall()
    assert rows == [("web", "done")]


async def test_a_taken_port_is_one_config_line(tmp_path: Path) -> None:
    """`sonify run` with the web port in use stops with one line naming the adapter."""
    from bot.app import serve
    from core.errors import ConfigError
    from tests.conftest import make_config

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = make_config(tmp_path, web={"enabled": "true", "port": port})
        with pytest.raises(ConfigError) as err:
            await serve(config, asyncio.Event())
    message = str(err.value)
    assert "web adapter cannot start" in message and "\n" not in message


async def test_missing_models_stop_start_up_with_one_line(tmp_path: Path) -> None:
    """Real preset, offline, nothing cached: `sonify run` stops before serving anything."""
    from bot.app import serve
    from core.errors import ModelMissingError
    from tests.conftest import make_config

    config = make_config(tmp_path, models={"preset": "default",
                                           "cache_dir": str(tmp_path / "empty-cache")},
                         web={"enabled": "true", "port": 0})
    with pytest.raises(ModelMissingError) as err:
        await serve(config, asyncio.Event())
    assert "\n" not in str(err.value) and "SONIFY_MODELS=tiny" in str(err.value)


def test_the_platforms_line_says_why_each_is_off(tmp_path: Path) -> None:
    from bot.app import platforms_line
    from tests.conftest import make_config

    both = make_config(tmp_path, telegram={"token": "1:A"}, discord={"token": "d"})
    assert platforms_line(both) == ("Telegram: on (polling); Discord: on; web page: off (a bot "
                                    "token is set; [web] enabled = true serves it too)")
    off = make_config(tmp_path, telegram={"token": "1:A"}, web={"enabled": "false"})
    assert platforms_line(off).endswith("; web page: off ([web] enabled = false)")
    assert platforms_line(off).startswith("Telegram: on (polling); Discord: off (no token")
