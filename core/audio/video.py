"""The answer to a moving picture: the same video with its new sound, as an MP4.

H.264 + AAC, `yuv420p`, `+faststart` (playable while it downloads). When the input is
already H.264 4:2:0 in MP4/MOV its video packets are copied unchanged; anything else is
decoded frame by frame and encoded, each frame keeping its own start and duration (a GIF's
delays stay variable). The sound spans the whole video: a shorter clip is looped with a
crossfade (`SoundFit.LOOPED`, for the reply to say so), a longer one is cut.

FFmpeg reads only the bytes we give it (through `core.intake`'s guarded opener) and writes
only into a private temporary folder (the MP4 muxer re-reads its own output to move the
index to the front).
"""

from __future__ import annotations

import tempfile
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from core.audio.encode import prepare_clip
from core.config import VideoConfig
from core.intake.video import DecodedClip, iter_clip_frames
from core.intake.video_demux import ffmpeg_errors, open_video, read_only
from core.records import SoundFit

AUDIO_RATE = 48_000
AUDIO_KBPS = {1: 96, 2: 128}  # AAC-LC, by channel count
CRF = 23  # x264's default quality
PRESET = "veryfast"  # a CPU host encodes a 20 s clip in seconds, not minutes
MAX_ENCODE_SIDE = 1920  # a re-encoded video is scaled down to this (chat apps show less)
MIN_VIDEO_KBPS = 80  # below this a video is not worth sending: the sound goes alone
CROSSFADE_S = 0.5  # where a looped sound joins itself
PAD_S = 0.25  # a sound this much shorter than the video is padded with silence, not looped
TIME_BASE = Fraction(1, 90_000)  # fine enough for any frame rate and for GIF centiseconds
_SIZE_MARGIN = 0.95  # aim below max_bytes: the index and the encoder's overshoot
_SIZE_TRIES = 2


@dataclass(frozen=True)
class SoundtrackedVideo:
    """The MP4, or None when even a low bitrate cannot fit `max_bytes` (send the sound alone)."""

    data: bytes | None
    fit: SoundFit
    video_copied: bool  # the input's H.264 packets, unchanged
    video_seconds: float
    sound_seconds: float  # the clip's own length, before fitting
    video_kbps: int | None  # re-encoded at this bitrate to fit max_bytes; None: full quality

    @property
    def sound_only(self) -> bool:
        return self.data is None


def _as_channels(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) float32 from a 1-D mono clip or a 2-D clip either way round."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[np.newaxis]
    elif x.ndim != 2:
        raise ValueError(f"audio must be 1-D or 2-D, got shape {x.shape}")
    elif x.shape[0] > x.shape[1]:
        x = x.T
    if x.size == 0:
        raise ValueError("audio is empty")
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def fit_soundtrack(audio: np.ndarray, rate: int, seconds: float) -> tuple[np.ndarray, SoundFit]:
    """The clip made exactly `seconds` long, as (channels, samples) float32, and how."""
    x = _as_channels(audio)
    channels, length = x.shape
    target = max(1, round(seconds * rate))
    if length >= target - PAD_S * rate:
        out = np.zeros((channels, target), dtype=np.float32)
        out[:, :min(length, target)] = x[:, :target]
        return out, SoundFit.WHOLE
    overlap = min(round(CROSSFADE_S * rate), length // 4)
    ramp = np.linspace(0.0, np.pi / 2, overlap, dtype=np.float32)
    fade_in, fade_out = np.sin(ramp), np.cos(ramp)  # equal power: no dip where it joins
    out = np.zeros((channels, target + length), dtype=np.float32)
    at = 0
    while at < target:
        piece = x.copy()
        if overlap:
            if at:
                piece[:, :overlap] *= fade_in
            piece[:, length - overlap:] *= fade_out
        out[:, at:at + length] += piece
        at += length - overlap
    return out[:, :target], SoundFit.LOOPED


def add_soundtrack(data: bytes, clip: DecodedClip, audio: np.ndarray, rate: int,
                   settings: VideoConfig, *, max_bytes: int | None = None) -> SoundtrackedVideo:
    """`data` (the bytes `clip` was decoded from) as an MP4 with `audio` as its only sound.

    Above `max_bytes` the video is encoded again at the bitrate that fits (twice at most); when
    that would fall below MIN_VIDEO_KBPS, `data` is None and the sound goes alone.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    seconds = clip.timing.duration_s
    sound_seconds = _as_channels(audio).shape[1] / rate
    fitted, fit = fit_soundtrack(audio, rate, seconds)
    track = np.atleast_2d(prepare_clip(fitted, rate))
    answer = _Answer(fit=fit, video_seconds=seconds, sound_seconds=sound_seconds)
    with tempfile.TemporaryDirectory(prefix="sonify-mux-") as folder:
        path = Path(folder) / "answer.mp4"
        _write(path, data, clip, track, rate, settings, copy=clip.stream_copy, kbps=None)
        size = path.stat().st_size
        if max_bytes is None or size <= max_bytes:
            return answer.made(path.read_bytes(), copied=clip.stream_copy, kbps=None)
        audio_kbps = AUDIO_KBPS[min(track.shape[0], 2)]
        kbps = int(max_bytes * 8 * _SIZE_MARGIN / max(seconds, 0.1) / 1000) - audio_kbps
        for _ in range(_SIZE_TRIES):
            if kbps < MIN_VIDEO_KBPS:
                break
            _write(path, data, clip, track, rate, settings, copy=False, kbps=kbps)
            size = path.stat().st_size
            if size <= max_bytes:
                return answer.made(path.read_bytes(), copied=False, kbps=kbps)
            kbps = int(kbps * max_bytes / size * 0.9)
    return answer.made(None, copied=False, kbps=None)


@dataclass(frozen=True)
class _Answer:
    fit: SoundFit
    video_seconds: float
    sound_seconds: float

    def made(self, data: bytes | None, *, copied: bool, kbps: int | None) -> SoundtrackedVideo:
        return SoundtrackedVideo(data=data, fit=self.fit, video_copied=copied,
                                 video_seconds=self.video_seconds,
                                 sound_seconds=self.sound_seconds, video_kbps=kbps)


def _write(path: Path, data: bytes, clip: DecodedClip, track: np.ndarray, rate: int,
           settings: VideoConfig, *, copy: bool, kbps: int | None) -> None:
    with ffmpeg_errors(), av.open(str(path), mode="w", format="mp4",
                                  options={"movflags": "+faststart"}) as out:
        sound = _Interleaver(out, _aac_packets(out, track, rate))
        if copy:
            _copy_video(out, sound, data, clip, settings)
        else:
            _encode_video(out, sound, data, clip, settings, kbps)
        sound.finish()


class _Interleaver:
    """Muxes the sound's packets in time order with the video's as these are written."""

    def __init__(self, out: Any, packets: list[Any]) -> None:
        self.out, self.pending = out, deque(packets)

    def until(self, seconds: float) -> None:
        while self.pending and float(self.pending[0].pts * self.pending[0].time_base) <= seconds:
            self.out.mux(self.pending.popleft())

    def finish(self) -> None:
        self.until(float("inf"))


def _aac_packets(out: Any, track: np.ndarray, rate: int) -> list[Any]:
    channels = min(track.shape[0], 2)
    layout = "mono" if channels == 1 else "stereo"
    stream = out.add_stream("aac", rate=AUDIO_RATE, layout=layout)
    stream.codec_context.bit_rate = AUDIO_KBPS[channels] * 1000
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(track[:channels]), format="fltp",
                                       layout=layout)
    frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=AUDIO_RATE)
    packets: list[Any] = []
    for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
        packets += stream.encode(resampled)
    packets += stream.encode(None)
    return packets


def _copy_video(out: Any, sound: _Interleaver, data: bytes, clip: DecodedClip,
                settings: VideoConfig) -> None:
    with open_video(data, clip.format, settings) as source:
        (stream,) = [s for s in source.streams.video if s.codec_context.codec.canonical_name
                     == clip.codec][:1]
        read_only(source, stream)
        target = out.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is None:
                continue  # the demuxer's end-of-stream marker
            sound.until(float(packet.dts * packet.time_base))
            packet.stream = target
            out.mux(packet)


def _even_size(clip: DecodedClip) -> tuple[int, int]:
    """The encoded size: at most MAX_ENCODE_SIDE, even sides (4:2:0 halves both)."""
    scale = min(1.0, MAX_ENCODE_SIDE / max(clip.width, clip.height))
    return (max(2, round(clip.width * scale / 2) * 2), max(2, round(clip.height * scale / 2) * 2))


def _encode_video(out: Any, sound: _Interleaver, data: bytes, clip: DecodedClip,
                  settings: VideoConfig, kbps: int | None) -> None:
    width, height = _even_size(clip)
    # No B-frames: with them the MP4's sample durations follow decode order, and a variable
    # frame rate (a GIF's delays) would come out shifted by one frame.
    options = {"preset": PRESET, "bf": "0"}
    options |= {"crf": str(CRF)} if kbps is None else {"maxrate": f"{kbps}k",
                                                       "bufsize": f"{2 * kbps}k"}
    stream = out.add_stream("libx264", options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.time_base = stream.time_base = TIME_BASE
    stream.codec_context.thread_count = 2
    if kbps is not None:
        stream.codec_context.bit_rate = kbps * 1000
    if clip.rotation:
        stream.set_display_rotation(clip.rotation)
    durations: dict[int, int] = {}

    def send(frame: Any) -> None:
        for packet in stream.encode(frame):
            packet.duration = durations.get(packet.pts, 0)
            sound.until(float(packet.pts * TIME_BASE))
            out.mux(packet)

    held: tuple[Any, int] | None = None
    last_pts = -1
    for picture, start in iter_clip_frames(data, clip, settings):
        pts = max(round(start / TIME_BASE), last_pts + 1)
        if held is not None:
            durations[held[1]] = pts - held[1]
            send(held[0])
        frame = av.VideoFrame.from_image(picture) if not isinstance(picture, av.VideoFrame) \
            else picture
        frame = frame.reformat(width=width, height=height, format="yuv420p")
        frame.pts, frame.time_base = pts, TIME_BASE
        held, last_pts = (frame, pts), pts
    if held is not None:  # the last frame lasts to the clip's end
        durations[held[1]] = max(1, round(clip.timing.duration_s / TIME_BASE) - held[1])
        send(held[0])
    send(None)
