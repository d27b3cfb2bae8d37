"""`sonify sync-commands` as a user runs it: a real process registers the commands, and says so."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.bot.discord.conftest import TOKEN
from tests.bot.discord.fake_discord import BOT_ID, GUILD_ID, FakeDiscord
from tests.conftest import tiny_toml
from tests.sonify_process import EXIT_WITHIN_S, offline_env, sonify_command


async def sync_commands(config: Path, cwd: Path, token: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *sonify_command(), "sync-commands", "--config", str(config), cwd=cwd,
        env=offline_env(SONIFY_DISCORD_TOKEN=token),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), EXIT_WITHIN_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_sync_commands_registers_the_commands_in_the_configured_guild(
        fake: FakeDiscord, tmp_path: Path) -> None:
    fake.bot_token = TOKEN  # any other token is refused: this one comes from the environment
    config = tmp_path / "sonify.toml"
    config.write_text(tiny_toml(tmp_path / "data", discord={
        "api_base_url": fake.api_url, "guilds": [GUILD_ID]}), encoding="utf-8")

    code, out, err = await sync_commands(config, tmp_path, TOKEN)
    assert (code, out) == (0, "registered 4 commands\n"), err
    (call,) = fake.find("PUT", rf"/applications/{BOT_ID}/guilds/{GUILD_ID}/commands")
    assert {c["name"] for c in call.json} == {"sonify", "stats", "settings", "Sonify this image"}
    assert TOKEN not in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()  # the configuration and Discord: nothing else

    code, out, err = await sync_commands(config, tmp_path, "not-the-bot-token")
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == f"sonify: {config}: [discord] token was refused by Discord"
    assert "Traceback" not in err
