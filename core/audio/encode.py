"""Clip encoding (OGG/Opus, MP3, WAV) through soundfile's bundled libsndfile; no ffmpeg.

A clip is a float32 array: 1-D for mono, 2-D for stereo (either way round: the channels are
the short axis). Every format here keeps stereo; `mono=True` downmixes (Telegram voice notes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from core.files import write_atomically

TARGET_PEAK = 0.95
FADE_S = 0.015
# Lossy decoders can overshoot the input's peak; what soundfile reads back must stay below this.
MAX_DECODED_PEAK = 0.999
_MAX_TRIES = 6
MAX_CHANNELS = 2  # more (surround) is downmixed to mono: no format here maps it portably


@dataclass(frozen=True)
class AudioFormat:
    """How one output format is written by libsndfile."""

    name: str
    container: str
    subtype: str
    extension: str
    mime: str
    rates: tuple[int, ...] | None  # None: any rate
    compression_level: float | None
    lossy: bool


FORMATS: dict[str, AudioFormat] = {
    # Level 0.8 gives about 60 kbit/s: fine for sound effects, small enough for voice notes.
    "ogg": AudioFormat("ogg", "OGG", "OPUS", ".ogg", "audio/ogg",
                       (8000, 12000, 16000, 24000, 48000), 0.8, True),
    "mp3": AudioFormat("mp3", "MP3", "MPEG_LAYER_III", ".mp3", "audio/mpeg",
                       (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000), 0.5, True),
    "wav": AudioFormat("wav", "WAV", "PCM_16", ".wav", "audio/wav", None, None, False),
}
_SUFFIXES = {".ogg": "ogg", ".opus": "ogg", ".oga": "ogg", ".mp3": "mp3", ".wav": "wav"}


def _channels(audio: np.ndarray, *, mono: bool = False) -> np.ndarray:
    """The clip as a finite float32 (channels, samples) array, 1 or 2 channels."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[np.newaxis]
    elif x.ndim == 2:
        if x.shape[0] > x.shape[1]:
            x = x.T  # (samples, channels), as soundfile reads it
    else:
        raise ValueError(f"audio must be 1-D (mono) or 2-D, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("audio is empty")
    if mono or x.shape[0] > MAX_CHANNELS:
        x = x.mean(axis=0, keepdims=True)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


def _as_clip(x: np.ndarray) -> np.ndarray:
    """(channels, samples) back to the clip layout: 1-D when mono."""
    return x[0] if x.shape[0] == 1 else x


def to_mono(audio: np.ndarray) -> np.ndarray:
    """The clip downmixed to one channel (1-D float32)."""
    mono: np.ndarray = _channels(audio, mono=True)[0]
    return mono


def channel_count(audio: np.ndarray) -> int:
    """1 (mono) or 2 (stereo): what the clip is written with."""
    return int(_channels(audio).shape[0])


def prepare_clip(audio: np.ndarray, rate: int, *, peak: float = TARGET_PEAK,
                 fade_s: float = FADE_S, mono: bool = False) -> np.ndarray:
    """Float32 clip peak-normalised to `peak`, with short linear fades in and out.

    Stereo stays stereo, as (2, samples), unless `mono`; one gain for both channels keeps the
    balance between them.
    """
    if not 0.0 < peak <= 1.0:
        raise ValueError(f"peak must be in (0, 1], got {peak}")
    x = _channels(audio, mono=mono).copy()
    top = float(np.max(np.abs(x)))
    if top > 1e-9:  # silence stays silence instead of becoming amplified rounding noise (or NaN)
        x *= peak / top
    else:
        x[:] = 0.0
    n = min(round(rate * fade_s), x.shape[1] // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n + 1, dtype=np.float32)[1:]
        x[:, :n] *= ramp
        x[:, -n:] *= ramp[::-1]
    clipped: np.ndarray = np.clip(x, -1.0, 1.0)
    return _as_clip(clipped)


def encodable_rate(rate: int, fmt: str) -> int:
    """The rate a clip at `rate` is written at in `fmt` (the next supported rate up, or the top)."""
    rates = _format_spec(fmt).rates
    if rates is None or rate in rates:
        return rate
    return next((r for r in rates if r >= rate), rates[-1])


def resample(audio: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Polyphase resampling (band-limited) along the last axis (time), float32."""
    if rate == new_rate:
        return np.asarray(audio, dtype=np.float32)
    # scipy is heavy: imported only when a clip needs another rate, not by every importer.
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(new_rate))
    out = resample_poly(np.asarray(audio, dtype=np.float64), new_rate // g, rate // g, axis=-1)
    clipped: np.ndarray = np.clip(out, -1.0, 1.0).astype(np.float32)
    return clipped


def _format_spec(fmt: str) -> AudioFormat:
    try:
        return FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown audio format {fmt!r}; use one of {', '.join(FORMATS)}") from None


def _encode_bytes(x: np.ndarray, rate: int, spec: AudioFormat) -> bytes:
    """Write (channels, samples) `x`; soundfile wants (samples, channels)."""
    buf = io.BytesIO()
    sf.write(buf, x.T, rate, format=spec.container, subtype=spec.subtype,
             compression_level=spec.compression_level)
    return buf.getvalue()


def _decoded_peak(data: bytes) -> float:
    decoded, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return float(np.max(np.abs(decoded))) if decoded.size else 0.0


def encode_clip(audio: np.ndarray, rate: int, fmt: str, *, prepare: bool = True,
                mono: bool = False) -> bytes:
    """Encode a clip as `fmt` ("ogg" = OGG/Opus, "mp3", "wav"), resampling if needed.

    Mono stays mono and stereo stereo, unless `mono` asks for a downmix.
    """
    spec = _format_spec(fmt)
    x = _channels(prepare_clip(audio, rate, mono=mono) if prepare else
                  np.clip(_channels(audio, mono=mono), -1.0, 1.0))
    out_rate = encodable_rate(rate, spec.name)
    x = resample(x, rate, out_rate)
    data = _encode_bytes(x, out_rate, spec)
    if not spec.lossy:
        return data
    # Lossy codecs ring around transients and can decode above the input's peak: scale and retry.
    for _ in range(_MAX_TRIES):
        top = _decoded_peak(data)
        if top <= MAX_DECODED_PEAK:
            return data
        x = x * (0.97 * MAX_DECODED_PEAK / top)
        data = _encode_bytes(x, out_rate, spec)
    return data


def clip_duration(data: bytes) -> float:
    """Duration in seconds of an encoded clip, as soundfile reads it."""
    info = sf.info(io.BytesIO(data))
    return info.frames / info.samplerate if info.samplerate else 0.0


def format_for_path(path: Path) -> str:
    """The format name for a file name's suffix (".ogg"/".opus" → "ogg", ".mp3", ".wav")."""
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"cannot tell the audio format from {path.name!r}; "
                         f"use one of {', '.join(_SUFFIXES)}") from None


def write_clip(audio: np.ndarray, rate: int, path: Path, fmt: str | None = None, *,
               prepare: bool = True, mono: bool = False) -> float:
    """Encode and write a clip atomically (temp file, then rename); returns its duration in s."""
    path = Path(path)
    fmt = fmt or format_for_path(path)
    data = encode_clip(audio, rate, fmt, prepare=prepare, mono=mono)
    write_atomically(path, data)
    return clip_duration(data)
