"""The `sonify` command line as a user runs it: a real subprocess, tiny models, offline."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
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
    cases = {
        ("missing.jpg",): "no such file",
        ("notes.txt",): "isn't an image. send a jpeg, png, webp, gif, bmp or tiff picture",
        ("photo.jpg", "--seconds", "99"): "seconds",
        ("photo.jpg", "--seed", "-4"): "seed",
    }
    for extra, expected in cases.items():
        code, _, err = run_cli(capsys, "image", *extra, "-o", "x.ogg")
        assert code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert expected in lines[0].lower()
        assert "Traceback" not in err


def test_config_error_names_the_key(workdir: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    (workdir / "bad.toml").write_text("[jobs]\nmax_batch = 'lots'\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "image", "photo.jpg", "-o", "x.ogg", "--config", "bad.toml")
    assert code == 2
    assert err.strip() == "sonify: bad.toml: [jobs] max_batch: expected an integer, got 'lots'"


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
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no library log lines around it, no traceback
    line = lines[0]
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


async def test_stats_prints_the_log_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`sonify stats` reads the request log the bots wrote."""
    from core.errors import ImageRejected
    from core.services import Services
    from tests.conftest import make_config

    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    services = await Services.create(make_config(tmp_path))
    try:
        for user in ("1", "2"):
            await services.engine.reject(platform="telegram", user_id=user, chat_id=user,
                                         source_kind="photo",
                                         error=ImageRejected("no", code="not_image"))
    finally:
        await services.close()
    code = await asyncio.to_thread(main, ["stats", "--config", str(config_file)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "telegram" in out.out and "2" in out.out
    assert "rejected" in out.out
