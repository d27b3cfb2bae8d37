"""Clip encoding: what soundfile reads back from each format."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.audio.encode import (
    FADE_S,
    FORMATS,
    TARGET_PEAK,
    channel_count,
    clip_duration,
    encodable_rate,
    encode_clip,
    prepare_clip,
    to_mono,
    write_clip,
)

RATE = 16000


def noise(seconds: float, rate: int = RATE, scale: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def read(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return audio, rate


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("seconds", [0.5, 1.3, 5.0])
def test_formats_read_back(fmt: str, seconds: float) -> None:
    data = encode_clip(noise(seconds), RATE, fmt)
    audio, rate = read(data)
    assert rate == RATE
    assert abs(audio.shape[0] / rate - seconds) <= 0.1
    assert abs(clip_duration(data) - seconds) <= 0.1
    assert np.isfinite(audio).all()
    assert 0.5 < float(np.abs(audio).max()) <= 1.0


def test_container_is_what_the_name_says() -> None:
    assert sf.info(io.BytesIO(encode_clip(noise(1), RATE, "ogg"))).subtype == "OPUS"
    assert sf.info(io.BytesIO(encode_clip(noise(1), RATE, "mp3"))).format == "MP3"
    assert sf.info(io.BytesIO(encode_clip(noise(1), RATE, "wav"))).subtype == "PCM_16"


def test_wav_is_peak_normalised_exactly() -> None:
    audio, _ = read(encode_clip(noise(1.0, scale=40.0), RATE, "wav"))
    assert abs(float(np.abs(audio).max()) - TARGET_PEAK) < 1e-3


@pytest.mark.parametrize("fmt", ["ogg", "mp3"])
def test_lossy_overshoot_is_pulled_back_under_full_scale(fmt: str) -> None:
    # A full-scale square wave with no fades: codecs ring around its edges.
    t = np.arange(RATE) / RATE
    square = np.sign(np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    audio, _ = read(encode_clip(square, RATE, fmt, prepare=False))
    assert float(np.abs(audio).max()) <= 1.0


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_silence_stays_silent(fmt: str) -> None:
    audio, _ = read(encode_clip(np.zeros(RATE, dtype=np.float32), RATE, fmt))
    assert np.isfinite(audio).all()
    assert float(np.abs(audio).max()) < 1e-4


def test_prepare_clip_silence_and_non_finite() -> None:
    assert not prepare_clip(np.zeros(800, dtype=np.float32), RATE).any()
    dirty = noise(0.5)
    dirty[[10, 200, 300]] = [np.nan, np.inf, -np.inf]
    clean = prepare_clip(dirty, RATE)
    assert np.isfinite(clean).all()
    assert abs(float(np.abs(clean).max()) - TARGET_PEAK) < 1e-6


def test_fades_in_and_out() -> None:
    out = prepare_clip(np.full(RATE, 0.5, dtype=np.float32), RATE)
    n = round(RATE * FADE_S)
    assert 0.0 < out[0] < 0.01 and 0.0 < out[-1] < 0.01
    assert np.all(np.diff(out[:n]) > 0) and np.all(np.diff(out[-n:]) < 0)
    np.testing.assert_allclose(out[n:-n], TARGET_PEAK, rtol=1e-6)
    assert 0.008 <= FADE_S <= 0.025


def test_fades_fit_very_short_clips() -> None:
    out = prepare_clip(np.ones(10, dtype=np.float32), RATE)
    assert out.shape == (10,) and float(out.max()) <= TARGET_PEAK


def test_stereo_stays_stereo_either_way_round_unless_mono_is_asked() -> None:
    stereo = np.stack([noise(0.5), noise(0.5, seed=1, scale=0.5)])
    for layout in (stereo, stereo.T):  # (channels, samples) or (samples, channels)
        out = prepare_clip(layout, RATE)
        assert out.shape == (2, RATE // 2)
        assert abs(float(np.abs(out).max()) - TARGET_PEAK) < 1e-6
        # One gain for both channels (between the fades): their balance survives.
        n = round(RATE * FADE_S)
        np.testing.assert_allclose(out[:, n:-n] / stereo[:, n:-n],
                                   float(out[0, n] / stereo[0, n]), rtol=1e-4)
    assert prepare_clip(stereo, RATE, mono=True).shape == (RATE // 2,)
    assert prepare_clip(stereo[:1], RATE).shape == (RATE // 2,)  # one channel is mono
    surround = np.stack([noise(0.5, seed=i) for i in range(6)])
    assert prepare_clip(surround, RATE).shape == (RATE // 2,)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_keeps_stereo(fmt: str) -> None:
    left, right = noise(1.0, 44_100), noise(1.0, 44_100, seed=7)
    audio, rate = read(encode_clip(np.stack([left, right]), 44_100, fmt))
    assert audio.ndim == 2 and audio.shape[1] == 2
    assert abs(audio.shape[0] / rate - 1.0) <= 0.1
    assert float(np.abs(audio[:, 0] - audio[:, 1]).max()) > 0.1  # two channels, not one twice
    mono, _ = read(encode_clip(np.stack([left, right]), 44_100, fmt, mono=True))
    assert mono.ndim == 1


def test_to_mono_and_channel_count() -> None:
    stereo = np.stack([np.ones(100, dtype=np.float32), -np.ones(100, dtype=np.float32) * 0.5])
    np.testing.assert_allclose(to_mono(stereo), 0.25)
    assert channel_count(stereo) == 2 and channel_count(stereo.T) == 2
    assert channel_count(np.zeros(100, dtype=np.float32)) == 1


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.integers(1, 4000),
              elements=st.floats(width=32) | st.sampled_from([np.nan, np.inf, -np.inf])))
def test_prepare_clip_never_exceeds_peak(audio: np.ndarray) -> None:
    out = prepare_clip(audio, RATE)
    assert out.dtype == np.float32 and out.shape == audio.shape
    assert np.isfinite(out).all()
    assert float(np.abs(out).max()) <= TARGET_PEAK + 1e-6


@pytest.mark.parametrize("fmt,rate,expected", [("ogg", 22050, 24000), ("ogg", 44100, 48000),
                                               ("ogg", 96000, 48000), ("mp3", 17000, 22050),
                                               ("wav", 17000, 17000), ("ogg", 16000, 16000)])
def test_unsupported_rates_are_resampled(fmt: str, rate: int, expected: int) -> None:
    assert encodable_rate(rate, fmt) == expected
    data = encode_clip(noise(1.2, rate), rate, fmt)
    audio, got = read(data)
    assert got == expected
    assert abs(audio.shape[0] / got - 1.2) <= 0.1
    assert float(np.abs(audio).max()) <= 1.0


@pytest.mark.parametrize("name,fmt", [("clip.ogg", None), ("clip.mp3", None), ("clip.wav", None),
                                      ("clip.bin", "ogg")])
def test_write_clip_reports_duration(tmp_path: Path, name: str, fmt: str | None) -> None:
    path = tmp_path / "out" / name
    duration = write_clip(noise(2.0), RATE, path, fmt)
    assert abs(duration - 2.0) <= 0.1
    audio, rate = sf.read(path, dtype="float32")
    assert abs(audio.shape[0] / rate - duration) <= 0.05
    assert sorted(p.name for p in path.parent.iterdir()) == [name]  # no temp files left


def test_bad_requests_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown audio format"):
        encode_clip(noise(0.5), RATE, "flac")
    with pytest.raises(ValueError, match="cannot tell the audio format"):
        write_clip(noise(0.5), RATE, tmp_path / "clip.xyz")
    with pytest.raises(ValueError, match="empty"):
        encode_clip(np.zeros(0, dtype=np.float32), RATE, "wav")
