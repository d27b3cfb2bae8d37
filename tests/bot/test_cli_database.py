"""`SONIFY_DATABASE_URL` as a user sets it: it wins over the file, and a database that cannot
be reached ends `sonify stats` and `sonify run` with one line that hides its password."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.cli import main
from core.records import RequestRecord
from core.storage.request_log import RequestLog
from tests.core.test_secrecy import encodings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "p@ss:word"  # written percent-encoded in part below, as a user would have to


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sonify(*args: str, cwd: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    # The web page's port, free: the built-in 8080 may be taken on the machine running tests.
    config = cwd / "config.toml"
    if not config.exists():
        config.write_text(f"[web]\nport = {closed_port()}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIFY_")}
    env.update(SONIFY_DATABASE_URL=database_url, SONIFY_MODELS="tiny", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def problems(stderr: str) -> list[str]:
    """stderr without `sonify run`'s start-up INFO lines (which platforms are on): what is
    left is what went wrong."""
    return [line for line in stderr.splitlines() if " INFO bot.app: " not in line]


def leaked(text: str) -> list[str]:
    """Every spelling of the password found in `text`: raw, decoded, encoded in any case or
    in part, encoded twice."""
    spellings = encodings(PASSWORD) | {"p%2540ss", "ss%3Aword", "ss%3aword", "ss:word"}
    return sorted(s for s in spellings if s in text)


@pytest.mark.parametrize("command", ["stats", "run"])
def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path,
                                                                  command: str) -> None:
    port = closed_port()
    url = f"postgresql+asyncpg://user:p%40ss:word@127.0.0.1:{port}/db"
    done = sonify(command, cwd=tmp_path, database_url=url)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    (line,) = problems(done.stderr)
    assert line.startswith("sonify: cannot open the request log at "
                           f"postgresql+asyncpg://user:***@127.0.0.1:{port}/db: ")
    assert "refused" in line.lower() or "connect" in line.lower()
    assert leaked(done.stderr) == []

    # With debug logging on, no log line (ours or the libraries') shows it either.
    verbose = sonify(command, "-v", cwd=tmp_path, database_url=url)
    assert verbose.returncode == 1
    assert "Traceback" not in verbose.stderr
    assert leaked(verbose.stdout + verbose.stderr) == []


async def test_the_environment_database_wins_over_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    in_file, in_env = tmp_path / "file.db", tmp_path / "env.db"
    for path, platform, count in ((in_file, "telegram", 1), (in_env, "discord", 3)):
        request_log = await RequestLog.open(f"sqlite+aiosqlite:///{path}")
        try:
            for n in range(count):
                await request_log.insert(RequestRecord(
                    id=f"{platform}{n}", platform=platform, user_id="u", chat_id="c",
                    source_kind="photo", status="done", created_at=time.time() - 10))
        finally:
            await request_log.close()
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[storage]\ndatabase_url = "sqlite+aiosqlite:///{in_file}"\n',
                           encoding="utf-8")
    monkeypatch.setenv("SONIFY_DATABASE_URL", f"sqlite+aiosqlite:///{in_env}")
    code = await asyncio.to_thread(main, ["stats", "--config", str(config_file)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Today: 3 requests — discord 3" in out.out
    assert "telegram" not in out.out


def test_every_error_line_masks_the_configurations_secrets(
        capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import fail

    token = "123456789:AAFake-Key_0123456789"
    code = fail("Discord said: invalid token 123456789%3AAAFake-Key_0123456789\n"
                f"retrying with {token[:20]}…", 1, [token])
    assert code == 1
    assert capsys.readouterr().err == ("sonify: Discord said: invalid token ***\n"
                                       "sonify: retrying with 123456789:***…\n")


def test_an_unexpected_error_is_logged_masked_not_printed_raw(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import bot.cli
    from bot.cli.common import Command

    token = "123456789:AAFake-Key_0123456789"
    monkeypatch.setenv("SONIFY_TELEGRAM_TOKEN", token)

    def broken(args: object, config: object) -> int:
        raise RuntimeError(f"a bug holding {token} (quoted: {token!r})")

    monkeypatch.setattr(bot.cli, "COMMANDS", (Command("stats", "print statistics", broken),))
    monkeypatch.chdir(tmp_path)
    assert bot.cli.main(["stats"]) == 1
    err = capsys.readouterr().err
    assert "unexpected error in `sonify stats`" in err and "RuntimeError: a bug holding ***" in err
    assert "AAFake-Key" not in err


@pytest.mark.parametrize("command", ["stats", "run"])
async def test_a_damaged_database_is_one_line_naming_the_file_and_what_to_do(
        tmp_path: Path, command: str) -> None:
    """A valid header and corrupted pages (a disk fault, a copy taken mid-write)."""
    path = tmp_path / "data" / "sonify.db"
    url = f"sqlite+aiosqlite:///{path}"
    request_log = await RequestLog.open(url)
    try:
        for n in range(2000):
            await request_log.insert(RequestRecord(
                id=f"r{n:011d}", platform="web", user_id="u", chat_id="c", source_kind="upload",
                status="queued" if n % 3 else "done", created_at=time.time(), caption="x" * 200))
    finally:
        await request_log.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for start in range(2 * page, len(data), page):  # every page but the header's
        data[start + 100:start + 1100] = bytes(range(256)) * 3 + bytes(232)
    path.write_bytes(bytes(data))
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[web]\nport = 0\n',
                      encoding="utf-8")
    done = await asyncio.to_thread(sonify, command, "--config", str(config), cwd=tmp_path,
                                   database_url=url)
    assert done.returncode == 1, done.stderr
    (line,) = problems(done.stderr)
    assert line.startswith(f"sonify: the request log {path} is damaged (")
    assert line.endswith("; restore it from a backup, or move it aside (with its -wal and "
                         "-shm files, if any) to start with an empty one")
