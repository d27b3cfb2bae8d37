"""`sonify listen`/`sonify image` with a video or an animation: the video with its new sound."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from tests.bot.test_cli import check_clip, sonify, workdir  # noqa: F401 (a fixture)
from tests.core.audio.test_video import probe
from tests.core.intake.video_fixtures import animation, encode_video

DELAYS_MS = [100, 200, 100, 300, 100, 200]  # 1.0 s, variable: the delays must survive


def frame_count_and_seconds(data: bytes) -> tuple[int, float]:
    seen = probe(data)
    return len(seen.frame_times), seen.video_seconds


def test_an_animated_gif_becomes_an_mp4_with_its_sound(workdir: Path) -> None:  # noqa: F811
    """The acceptance run: `SONIFY_MODELS=tiny sonify image anim.gif -o out.mp4`."""
    (workdir / "anim.gif").write_bytes(animation("GIF", DELAYS_MS))
    out = workdir / "out.mp4"
    proc = sonify("image", "anim.gif", "-o", str(out), cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    caption = proc.stdout.strip()
    assert caption and "\n" not in caption
    assert "sonify: captioning 3 frames..." in proc.stderr
    seen = probe(out.read_bytes())
    assert (seen.video_codec, seen.pixel_format, seen.audio_codec) == ("h264", "yuv420p", "aac")
    assert len(seen.frame_times) == len(DELAYS_MS)
    starts = [sum(DELAYS_MS[:i]) / 1000 for i in range(len(DELAYS_MS))]
    assert seen.frame_times == pytest.approx(starts, abs=0.011)
    assert seen.video_seconds == pytest.approx(1.0, abs=0.1)
    assert seen.audio_seconds == pytest.approx(seen.video_seconds, abs=0.1)


def test_an_mp4_clip_keeps_its_frames_and_gets_a_sound_as_long(
        workdir: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`sonify listen clip.mp4 -o out.mp4`: same frames, same length, one audio stream."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("SONIFY_MODELS", "tiny")
    clip = encode_video(frames=45, rate=15, audio_seconds=3.0)  # 3 s, with a sound of its own
    (workdir / "clip.mp4").write_bytes(clip)
    code = main(["listen", "clip.mp4", "-o", "out.mp4", "--seed", "3"])
    err = capsys.readouterr().err
    assert code == 0, err
    before, after = probe(clip), probe((workdir / "out.mp4").read_bytes())
    assert len(after.frame_times) == len(before.frame_times) == 45
    assert after.video_seconds == pytest.approx(before.video_seconds, abs=1 / 15)
    assert after.audio_seconds == pytest.approx(after.video_seconds, abs=0.1)
    # The same clip with an audio file for OUT: the sound alone, as long as the clip.
    assert main(["listen", "clip.mp4", "-o", "out.ogg", "--seed", "3"]) == 0
    check_clip(workdir / "out.ogg", "ogg", 3.0)


def test_an_mp4_answer_needs_a_moving_picture(workdir: Path,  # noqa: F811
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    assert main(["listen", "photo.jpg", "-o", "out.mp4"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "still picture" in err[0]
    assert not (workdir / "out.mp4").exists()
