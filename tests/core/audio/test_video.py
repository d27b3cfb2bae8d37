"""The answer to a moving picture: the same video, its new sound, one MP4."""

from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import pairwise

import av
import numpy as np
import pytest

from core.audio.video import (
    AUDIO_RATE,
    MIN_VIDEO_KBPS,
    SoundFit,
    add_soundtrack,
    fit_soundtrack,
)
from core.config import VideoConfig
from core.intake.video import decode_clip
from tests.core.intake.video_fixtures import animation, encode_video

SETTINGS = VideoConfig()
RATE = 16_000  # AudioLDM's rate


def tone(seconds: float, hz: float = 440.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@dataclass
class Probe:
    video_codec: str
    pixel_format: str
    frame_times: list[float]
    video_seconds: float
    audio_codec: str
    audio_channels: int
    audio_seconds: float
    peak_hz: float
    rotation: int


def probe(data: bytes) -> Probe:
    """What a player sees: one video and one audio stream, their frames and lengths."""
    with av.open(io.BytesIO(data), format="mp4") as container:
        (video,) = container.streams.video
        (audio,) = container.streams.audio
        codec, pixel_format = video.codec_context.name, video.codec_context.pix_fmt
        frames = list(container.decode(video))
        times = [float(f.time) for f in frames]
        rotation = int(frames[0].rotation)
        video_seconds = float(video.duration * video.time_base)
    with av.open(io.BytesIO(data), format="mp4") as container:
        (audio,) = container.streams.audio
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio)])
        audio_codec, channels = audio.codec_context.name, audio.codec_context.channels
        audio_seconds = float(audio.duration * audio.time_base)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = float(np.argmax(spectrum) * audio.codec_context.sample_rate / len(samples))
    return Probe(codec, pixel_format, times, video_seconds, audio_codec, channels,
                 audio_seconds, peak_hz, rotation)


def video_packets(data: bytes) -> list[tuple[bytes, int | None, int | None]]:
    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams.video[0]
        return [(bytes(p), p.pts, p.duration) for p in container.demux(stream) if p.size]


def assert_same_video(source: bytes, answer: bytes, clip_frames: list[float]) -> Probe:
    got = probe(answer)
    frame = max(b - a for a, b in pairwise(clip_frames))
    assert (got.video_codec, got.pixel_format, got.audio_codec) == ("h264", "yuv420p", "aac")
    assert len(got.frame_times) == len(clip_frames)
    assert got.frame_times == pytest.approx(clip_frames, abs=0.002)
    source_seconds = decode_clip(source, SETTINGS).timing.duration_s
    assert abs(got.video_seconds - source_seconds) < frame
    assert abs(got.audio_seconds - got.video_seconds) < 0.1
    assert answer.index(b"moov") < answer.index(b"mdat")  # +faststart: playable as it arrives
    return got


def test_a_gif_becomes_an_mp4_with_its_delays_and_the_sound() -> None:
    data = animation("GIF", [100, 250, 40, 300, 120, 60, 500])
    clip = decode_clip(data, SETTINGS)
    result = add_soundtrack(data, clip, tone(3.0), RATE, SETTINGS)
    assert result.data is not None and not result.video_copied and result.fit is SoundFit.WHOLE
    got = assert_same_video(data, result.data, list(clip.timing.frame_times_s))
    assert got.video_seconds == pytest.approx(1.37, abs=0.001)
    assert got.audio_seconds == pytest.approx(1.37, abs=0.03)
    assert got.peak_hz == pytest.approx(440, abs=5)
    assert got.audio_channels == 1


def test_h264_mp4_keeps_its_video_packets_exactly() -> None:
    data = encode_video("mp4", frames=45, rate=15, size=(160, 120), audio_seconds=3.0)
    clip = decode_clip(data, SETTINGS)
    result = add_soundtrack(data, clip, tone(5.0, hz=1000), RATE, SETTINGS)
    assert result.data is not None and result.video_copied
    assert video_packets(result.data) == video_packets(data)  # bytes, times and durations
    got = assert_same_video(data, result.data, list(clip.timing.frame_times_s))
    assert got.peak_hz == pytest.approx(1000, abs=5)  # the new sound replaced the old one


def test_a_rotated_phone_video_stays_rotated() -> None:
    copied = encode_video("mov", frames=10, rotation=-90)
    encoded = encode_video("mp4", "libx265", frames=10, rotation=90)
    for data, rotation, copy in ((copied, -90, True), (encoded, 90, False)):
        clip = decode_clip(data, SETTINGS)
        result = add_soundtrack(data, clip, tone(1.0), RATE, SETTINGS)
        assert result.data is not None and result.video_copied is copy
        assert probe(result.data).rotation == rotation


@pytest.mark.parametrize(("container", "encoder"), [
    ("webm", "libvpx-vp9"), ("webm", "libvpx"), ("mp4", "libx265"), ("mp4", "libsvtav1"),
    ("matroska", "libx264")])
def test_other_codecs_are_encoded_to_h264_frame_for_frame(container: str, encoder: str) -> None:
    data = encode_video(container, encoder, frames=30, rate=15, size=(66, 50))
    clip = decode_clip(data, SETTINGS)
    result = add_soundtrack(data, clip, tone(2.0), RATE, SETTINGS)
    assert result.data is not None and not result.video_copied
    assert_same_video(data, result.data, list(clip.timing.frame_times_s))


def test_a_variable_frame_rate_video_keeps_each_frames_time() -> None:
    times = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.2, 1.3, 1.35]
    data = encode_video("webm", "libvpx-vp9", times=times, frames=len(times))
    clip = decode_clip(data, SETTINGS)
    result = add_soundtrack(data, clip, tone(2.0), RATE, SETTINGS)
    assert result.data is not None
    assert probe(result.data).frame_times == pytest.approx(times, abs=0.002)


def test_a_short_sound_loops_over_a_longer_video_and_says_so() -> None:
    data = animation("WEBP", [500] * 8)  # 4 s
    clip = decode_clip(data, SETTINGS)
    result = add_soundtrack(data, clip, tone(1.5), RATE, SETTINGS)
    assert result.fit is SoundFit.LOOPED
    assert (result.sound_seconds, result.video_seconds) == pytest.approx((1.5, 4.0))
    assert result.data is not None
    got = probe(result.data)
    assert got.audio_seconds == pytest.approx(4.0, abs=0.03)


def test_looping_fills_the_length_without_a_gap() -> None:
    looped, fit = fit_soundtrack(tone(1.0), RATE, 3.3)
    assert fit is SoundFit.LOOPED and looped.shape == (1, round(3.3 * RATE))
    windows = looped[0, : (looped.shape[1] // 1600) * 1600].reshape(-1, 1600)
    assert np.sqrt((windows ** 2).mean(axis=1)).min() > 0.2  # never silent, no dip at a join
    whole, fit = fit_soundtrack(tone(2.9), RATE, 3.0)
    assert fit is SoundFit.WHOLE and whole.shape == (1, 3 * RATE)
    assert not whole[0, -RATE // 20:].any()  # a few ms short: padded with silence, not looped
    cut, fit = fit_soundtrack(np.stack([tone(8.0), tone(8.0)]), RATE, 2.0)
    assert fit is SoundFit.WHOLE and cut.shape == (2, 2 * RATE)


def test_a_stereo_44100_clip_stays_stereo() -> None:
    data = animation("PNG", [200] * 5)
    clip = decode_clip(data, SETTINGS)
    stereo = np.stack([tone(1.0, rate=44_100), tone(1.0, 660, rate=44_100)])
    result = add_soundtrack(data, clip, stereo, 44_100, SETTINGS)
    assert result.data is not None
    with av.open(io.BytesIO(result.data)) as container:
        audio = container.streams.audio[0].codec_context
        assert (audio.channels, audio.sample_rate) == (2, AUDIO_RATE)


def test_above_max_bytes_the_video_is_encoded_smaller_or_the_sound_goes_alone() -> None:
    data = encode_video("mp4", frames=40, rate=10, size=(320, 240), noise=True,
                        options={"crf": "12", "preset": "ultrafast"})
    clip = decode_clip(data, SETTINGS)
    full = add_soundtrack(data, clip, tone(4.0), RATE, SETTINGS)
    assert full.data is not None and full.video_copied and full.video_kbps is None
    cap = len(full.data) // 3
    smaller = add_soundtrack(data, clip, tone(4.0), RATE, SETTINGS, max_bytes=cap)
    assert smaller.data is not None and len(smaller.data) <= cap
    assert not smaller.video_copied and smaller.video_kbps is not None
    assert smaller.video_kbps >= MIN_VIDEO_KBPS
    assert len(probe(smaller.data).frame_times) == 40
    alone = add_soundtrack(data, clip, tone(4.0), RATE, SETTINGS, max_bytes=30_000)
    assert alone.sound_only and alone.data is None and alone.fit is SoundFit.WHOLE
