"""The `sonify` command line as a user runs it: a real subprocess, tiny models, offline."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import socket
import stat
import struct
import subprocess
import sys
import termios
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from PIL import Image

from bot.cli import main
from tests.conftest import TINY_CACHE, tiny_toml

ROOT = Path(__file__).resolve().parents[2]


def sonify(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 240) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SONIFY_MODELS": "tiny", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with a config for fast tiny renders and a photo."""
    (tmp_path / "config.toml").write_text(tiny_toml(tmp_path / "data"), encoding="utf-8")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(
        tmp_path / "photo.jpg", quality=90)
    return tmp_path


def check_clip(path: Path, fmt: str, seconds: float) -> None:
    info = sf.info(str(path))
    if fmt == "ogg":
        assert (info.format, info.subtype) == ("OGG", "OPUS")
    data, rate = sf.read(str(path), dtype="float32")
    assert abs(len(data) / rate - seconds) <= 0.1
    assert np.isfinite(data).all() and np.abs(data).max() <= 1.0


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`sonify ARGS` in this process (models stay loaded between calls)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_image_writes_an_ogg_opus_clip_as_a_user_runs_it(workdir: Path) -> None:
    """The acceptance run as a subprocess: `SONIFY_MODELS=tiny sonify image ... -o out.ogg`."""
    out = workdir / "out.ogg"
    proc = sonify("image", "photo.jpg", "-o", str(out), "--seconds", "2", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    caption = proc.stdout.strip()
    assert caption and "\n" not in caption
    assert caption[0].isupper() or not caption[0].isalpha()
    check_clip(out, "ogg", 2.0)
    assert "noise" in proc.stderr.lower()  # the tiny preset says loudly that it is noise
    # Not on a terminal: plain progress lines, one per stage and per step here (2 steps).
    progress = [line for line in proc.stderr.splitlines() if line.startswith("sonify: ")]
    assert progress[:7] == [
        "sonify: loading torch and the model libraries...",
        "sonify: loading the caption model...",
        "sonify: loading the sound model...",
        "sonify: captioning the picture...",
        "sonify: rendering the sound...",
        "sonify: rendering the sound: step 1/2",
        "sonify: rendering the sound: step 2/2",
    ]
    assert progress[7] == "sonify: encoding ogg..."
    assert progress[8].startswith("sonify: wrote ") and "2.00 s of ogg, seed " in progress[8]
    assert "\r" not in proc.stderr


@pytest.mark.parametrize(("fmt", "seconds"), [("mp3", 1.5), ("wav", 1.0), ("ogg", 1.0)])
def test_image_formats(workdir: Path, fmt: str, seconds: float,
                       capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("SONIFY_MODELS", "tiny")
    out = workdir / f"out.{fmt}"
    code, stdout, err = run_cli(capsys, "image", "photo.jpg", "-o", str(out), "--format", fmt,
                                "--seconds", str(seconds), "--seed", "7")
    assert code == 0, err
    assert stdout.strip()
    check_clip(out, fmt, seconds)


def test_bad_inputs_exit_non_zero_with_one_line(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("SONIFY_MODELS", "tiny")
    (workdir / "notes.txt").write_text("hello, not a picture", encoding="utf-8")
    (workdir / "pictures").mkdir()
    cases = {
        ("missing.jpg",): "sonify: no such file: missing.jpg",
        ("notes.txt",): "sonify: that isn't an image. send a jpeg, png, webp, gif, bmp or tiff",
        ("pictures",): "sonify: pictures is a folder; give one image file",
        ("ftp://example.com/a.jpg",): "sonify: ftp:// links are not supported; give an http:// "
                                      "or https:// link, or a local file",
        ("FILE:///etc/passwd",): "sonify: file:// links are not supported",
        ("photo.jpg", "--seconds", "99"): "sonify: seconds must be between 0.5 and 10",
        ("photo.jpg", "--seed", "-4"): "sonify: seed must be between 0 and 2147483647",
    }
    for extra, expected in cases.items():
        code, out, err = run_cli(capsys, "image", *extra, "-o", "x.ogg")
        assert code == 1 and out == ""
        assert len(err.splitlines()) == 1, err  # refused before the models load: no progress
        assert err.lower().startswith(expected.lower()), err
    assert not (workdir / "x.ogg").exists()


def test_the_format_comes_from_the_extension(workdir: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o clip.mp3` writes MP3, `.opus` OGG/Opus; `--format` names it when OUT has no extension."""
    monkeypatch.chdir(workdir)
    for args, path, container in ((("-o", "clip.mp3"), "clip.mp3", "MP3"),
                                  (("-o", "clip.opus"), "clip.opus", "OGG"),
                                  (("-o", "CLIP.WAV", "--format", "wav"), "CLIP.WAV", "WAV"),
                                  (("-o", "clip", "--format", "mp3"), "clip", "MP3")):
        code, _, err = run_cli(capsys, "image", "photo.jpg", *args)
        assert code == 0, err
        assert sf.info(str(workdir / path)).format == container
        assert f"sonify: wrote {path} (1.00 s of " in err


def test_format_mistakes_are_one_line_before_anything_loads(
        workdir: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    (workdir / "clips").mkdir()
    cases = {
        ("-o", "out.flac"): "sonify: cannot tell the audio format from 'out.flac'; use one of "
                            ".ogg, .opus, .oga, .mp3, .wav",
        ("-o", "out.ogg", "--format", "mp3"): "sonify: out.ogg: the extension says ogg but "
                                              "--format says mp3; make them agree",
        ("-o", "out"): "sonify: out: no extension to tell the format from; name it .ogg, .mp3 "
                       "or .wav, or give --format",
        ("-o", "clips"): "sonify: clips is a folder; give a file name, such as clips/clip.ogg",
    }
    for args, expected in cases.items():
        code, out, err = run_cli(capsys, "image", "photo.jpg", *args)
        assert (code, out, err) == (2, "", expected + "\n")
    assert sorted(p.name for p in workdir.iterdir()) == ["clips", "config.toml", "photo.jpg"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_clip_is_created_as_the_umask_says(workdir: Path, umask: int, mode: int,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    old = os.umask(umask)
    try:
        code, _, err = run_cli(capsys, "image", "photo.jpg", "-o", "new/folder/clip.ogg")
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE((workdir / "new/folder/clip.ogg").stat().st_mode) == mode
    assert stat.S_IMODE((workdir / "new/folder").stat().st_mode) == 0o777 & ~umask
    assert [p.name for p in (workdir / "new/folder").iterdir()] == ["clip.ogg"]  # no temp left


def test_version_and_help_show_what_applies(workdir: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`--version`; option help with the bounds and defaults the configuration sets."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("COLUMNS", "300")  # one help line per option: argparse wraps at COLUMNS
    version = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"sonify {version}\n"

    def help_lines(*args: str) -> list[str]:
        with pytest.raises(SystemExit):
            main(["image", "--help", *args])
        return [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]

    assert "--seconds S clip length in seconds, 0.5 to 10 (default: 1, from config.toml)" in \
        help_lines()
    (workdir / "long.toml").write_text("[generation]\nseconds = 8\nmax_seconds = 25\n",
                                       encoding="utf-8")
    lines = help_lines("--config", "long.toml")
    assert "--seconds S clip length in seconds, 0.5 to 25 (default: 8, from long.toml)" in lines
    assert "--steps N diffusion steps, 1 to 500; more is slower and finer (default: 20, from " \
           "long.toml)" in lines
    assert any(line.startswith("--seed N random seed, 0 to 2147483647") and
               "(default: a random one, printed at the end)" in line for line in lines)
    # A broken configuration still gets help (with the built-in values), and --version.
    (workdir / "broken.toml").write_text("[jobs]\nmax_batch = 0\n", encoding="utf-8")
    assert "--seconds S clip length in seconds, 0.5 to 10 (default: 5)" in help_lines(
        "--config", "broken.toml")


def test_config_error_names_the_key(workdir: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    (workdir / "bad.toml").write_text("[jobs]\nmax_batch = 'lots'\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "image", "photo.jpg", "-o", "x.ogg", "--config", "bad.toml")
    assert code == 2
    assert err.strip() == "sonify: bad.toml: [jobs] max_batch: expected an integer, got 'lots'"


def test_every_config_mistake_is_one_line(workdir: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    (workdir / "bad.toml").write_text("[jobs]\nmax_batch = 'lots'\n[web]\nport = 70000\n",
                                      encoding="utf-8")
    code, out, err = run_cli(capsys, "stats", "--config", "bad.toml")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "sonify: bad.toml: [jobs] max_batch: expected an integer, got 'lots'",
        "sonify: bad.toml: [web] port: 70000 is out of range; allowed 0 to 65535",
    ]


@pytest.mark.parametrize("missing", ["caption", "sound"])
def test_missing_weights_is_one_line(tmp_path: Path, missing: str,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Real preset, an empty model cache, offline: one line naming the model and the fix."""
    from core.models.tiny.coca import build_tiny_coca

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SONIFY_MODELS", raising=False)
    Image.new("RGB", (64, 64), "red").save(tmp_path / "red.png")
    # With the caption model in a local folder, the sound model is the one found missing.
    caption_path = str(build_tiny_coca(TINY_CACHE / "tiny")) if missing == "sound" else ""
    (tmp_path / "real.toml").write_text(
        f'[models]\ncache_dir = "{tmp_path / "empty-cache"}"\ndevice = "cpu"\n'
        f'caption_path = "{caption_path}"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    code, out, err = run_cli(capsys, "image", "red.png", "-o", "x.ogg", "--config", "real.toml")
    assert code != 0 and out == ""
    # The precision chosen is said once at start-up (core/models/precision.py), in every mode.
    said = [ln for ln in err.strip().splitlines() if " INFO core.models.loading: models run in "
            not in ln]
    *progress, line = said
    # The stages reached, then one line: no library log lines around it, no traceback.
    loading = ["sonify: loading torch and the model libraries...",
               "sonify: loading the caption model...", "sonify: loading the sound model..."]
    assert progress == loading[:len(progress)] and len(progress) >= 2, err
    assert line.startswith(f"sonify: {missing.capitalize()} model")
    assert f"{missing}_" in line and "SONIFY_MODELS=tiny" in line
    assert not (tmp_path / "x.ogg").exists()


async def test_url_to_loopback_refused_by_default_allowed_when_configured(
        workdir: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`sonify image URL` goes through the hardened intake: loopback is blocked unless allowed."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("SONIFY_MODELS", "tiny")
    png = workdir / "photo.png"
    Image.open(workdir / "photo.jpg").save(png)
    hits: list[str] = []

    async def photo(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=png.read_bytes(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/photo.png", photo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/photo.png"
    results = {}
    try:
        for allow in (False, True):
            config = workdir / f"allow-{allow}.toml"
            config.write_text(tiny_toml(workdir / "data",
                                        images={"allow_private_networks": allow}),
                              encoding="utf-8")
            # The CLI runs its own event loop, so it runs in a thread beside this test's server.
            code = await asyncio.to_thread(main, ["image", url, "-o", "u.ogg",
                                                  "--config", str(config)])
            results[allow] = (code, capsys.readouterr(), list(hits))
    finally:
        await runner.cleanup()
    code, out, seen = results[False]
    assert code != 0 and seen == []  # refused before connecting
    assert len(out.err.strip().splitlines()) == 1, out.err
    assert "private" in out.err.lower() or "blocked" in out.err.lower()
    code, out, seen = results[True]
    assert code == 0, out.err
    assert out.out.strip() and seen == ["/photo.png"]


async def test_stats_prints_the_log_summary_with_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sonify stats` reads the request log the bots wrote; top users by name where known."""
    from core.records import RequestRecord
    from core.storage.request_log import RequestLog

    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    request_log = await RequestLog.open(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'sonify.db'}")
    now = time.time()
    try:
        for n, (user, name, status) in enumerate([("1", "Ana", "done"), ("1", "Ana", "done"),
                                                  ("2", None, "done"), ("3", "Eve", "rejected")]):
            await request_log.insert(RequestRecord(
                id=f"r{n}", platform="telegram", user_id=user, chat_id=user, source_kind="photo",
                status=status, created_at=now - 60 + n, user_name=name))
    finally:
        await request_log.close()
    code = await asyncio.to_thread(main, ["stats", "--config", str(config_file)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Today: 4 requests — telegram 4 · done 3, rejected 1" in out.out
    assert "Top users (7 days): Ana — telegram:1 (2), telegram:2 (1)\n" in out.out
    # One chat's numbers (a group's, for its admins' questions), and a mistyped filter.
    code = await asyncio.to_thread(main, ["stats", "--config", str(config_file),
                                          "--chat", "telegram:1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "— telegram:1" in out.out and "Today: 2 requests — telegram 2 · done 2" in out.out
    assert "All kept: 2 requests" in out.out and "Eve" not in out.out
    code = await asyncio.to_thread(main, ["stats", "--config", str(config_file),
                                          "--chat", "telegram"])
    assert code != 0 and "--chat 'telegram': expected PLATFORM:ID" in capsys.readouterr().err


def test_stats_refuses_a_log_that_does_not_exist(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """In the wrong folder (or with another config) it says where it looked; it creates nothing."""
    config_file = tmp_path / "config.toml"
    data = tmp_path / "data"
    config_file.write_text(f'[storage]\ndata_dir = "{data}"\n', encoding="utf-8")
    code, out, err = run_cli(capsys, "stats", "--config", str(config_file))
    assert (code, out) == (1, "")
    assert err == (f"sonify: no request log at {data / 'sonify.db'}; the bots write it in "
                   f"[storage] data_dir (from {config_file}): run sonify stats with the same "
                   "--config and folder as sonify run\n")
    assert not data.exists()


@pytest.fixture
async def picture_server(workdir: Path) -> AsyncIterator[str]:
    """A loopback server: /photo.png is the picture, /gone answers 404."""
    png = workdir / "photo.png"
    Image.open(workdir / "photo.jpg").save(png)
    app = web.Application()
    app.router.add_get("/photo.png", lambda _: web.Response(body=png.read_bytes(),
                                                             content_type="image/png"))
    app.router.add_get("/gone", lambda _: web.Response(status=404, text="not here"))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_error_answer_and_an_unreachable_host_are_told_apart(
        workdir: Path, picture_server: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    cases = {
        f"{picture_server}/gone": "sonify: The server behind that link answered with an error "
                                  "(HTTP 404). Check that the link opens in a browser.",
        f"http://127.0.0.1:{free_port()}/photo.png":
            "sonify: I couldn't reach the server behind that link: the host doesn't exist or "
            "isn't answering.",
    }
    for url, expected in cases.items():
        # The CLI runs its own event loop, so it runs in a thread beside this test's server.
        code = await asyncio.to_thread(main, ["image", url, "-o", "u.ogg"])
        out = capsys.readouterr()
        assert (code, out.out, out.err) == (1, "", expected + "\n")


def test_a_taken_web_port_is_told_before_the_models_load(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real preset, nothing cached: were the models loaded first, that would be the error."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "web.toml"
        config.write_text(f'[models]\ncache_dir = "{tmp_path / "empty"}"\n'
                          f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
                          f'[web]\nenabled = true\nport = {port}\n', encoding="utf-8")
        started = time.monotonic()
        code, out, err = run_cli(capsys, "run", "--config", str(config))
    assert time.monotonic() - started < 10
    assert (code, out) == (2, "")
    assert err == (f"sonify: {config}: the web adapter cannot start: 127.0.0.1:{port} is already "
                   "in use; set another [web] port or stop the program that listens there\n")
    assert not (tmp_path / "data").exists()  # stopped before anything was opened


def test_a_taken_webhook_port_is_told_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "hook.toml"
        config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[telegram]\n'
                          'token = "123:abc"\nmode = "webhook"\n'
                          'webhook_url = "https://bot.example.test/hook"\n'
                          f'webhook_listen = "127.0.0.1"\nwebhook_port = {port}\n',
                          encoding="utf-8")
        code, _, err = run_cli(capsys, "run", "--config", str(config))
    assert code == 2
    assert err == (f"sonify: {config}: the telegram adapter cannot start: 127.0.0.1:{port} is "
                   "already in use; set another [telegram] webhook_port or stop the program "
                   "that listens there\n")


def test_progress_bars_on_a_terminal(workdir: Path) -> None:
    """On a terminal (a pseudo-terminal here, sized like a window) every stage is a bar."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {**os.environ, "SONIFY_MODELS": "tiny", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "image", "photo.jpg", "-o",
                             "t.ogg", "--steps", "3"], cwd=workdir, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    screen = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    stdout, _ = proc.communicate(timeout=60)
    text = screen.decode("utf-8", "replace")
    assert proc.returncode == 0, text
    assert stdout.strip()  # the caption, alone on stdout
    assert "\r" in text  # bars redraw in place
    for stage in ("loading torch and the model libraries: 00:", "loading the caption model: 00:",
                  "loading the sound model: 00:", "captioning the picture: 00:",
                  "encoding ogg: 00:"):
        assert stage in text, text
    assert "rendering the sound: 100%" in text and "3/3" in text
    assert "sonify: wrote t.ogg (1.00 s of ogg, seed " in text


def test_the_command_line_starts_without_the_model_libraries(workdir: Path) -> None:
    """torch & co. take seconds to import: `--version`, `stats` and early errors skip them."""
    probe = ("import sys\nfrom bot.cli import main\ncode = main(sys.argv[1:])\n"
             "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'open_clip') "
             "if m in sys.modules]\nprint('heavy:', heavy, file=sys.stderr)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", probe, "image", "missing.jpg", "-o", "x.ogg"],
                          cwd=workdir, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["sonify: no such file: missing.jpg", "heavy: []"]


def test_the_docs_set_expectations() -> None:
    """Set-up size and time, CPU/GPU expectations, where the ids come from, every command: in
    the documentation site, and the ids' sources in the README's first-bot steps too."""
    docs = ROOT / "docs"
    performance = (docs / "performance.md").read_text(encoding="utf-8")
    assert "\n## What to expect on a CPU and on a GPU\n" in performance
    install = (docs / "running/install.md").read_text(encoding="utf-8")
    assert "The virtual environment takes **6.7 GB**" in install
    telegram = (docs / "running/telegram.md").read_text(encoding="utf-8")
    discord = (docs / "running/discord.md").read_text(encoding="utf-8")
    assert "\n## Finding the ids\n" in telegram and "\n## Finding the ids\n" in discord
    assert "/getUpdates" in telegram and "Developer Mode" in discord
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "Developer Mode" in readme and "/getUpdates" in readme
    commands = (docs / "running/commands.md").read_text(encoding="utf-8")
    from bot.cli import COMMANDS

    for command in COMMANDS:
        assert f"| `sonify {command.name}" in commands, command.name
    assert "| `sonify --version` |" in commands
