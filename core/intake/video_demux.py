"""Videos through PyAV (FFmpeg): opened from bytes in memory, by an allowed demuxer only.

Three guards keep FFmpeg from opening anything but the bytes we hand it: the demuxer is named
(`mov` or `matroska`, from the magic bytes; FFmpeg never probes, so never picks `hls`,
`concat` or `image2`), no protocol is allowed for nested opens (`protocol_whitelist`), and the
format context's nested-open hook returns an empty buffer whatever is asked for. MP4 external
data references stay off (`enable_drefs=0`).

Bounds come in two steps: `scan_video` reads the headers and then every packet's timestamps
(no frame decoded), refusing at the first bound crossed; `iter_video_frames` decodes with the
decoder's own pixel cap and counts again, so a file that declares less than it holds is cut
off at the bound.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from statistics import median
from typing import Any

import av
import av.error
import av.stream

from core.config import VideoConfig
from core.errors import VideoRejected
from core.intake.animation import check_frame_size
from core.intake.video_sniff import MovingFormat

logger = logging.getLogger(__name__)

# Codec ids we decode, with the names users know them by.
ALLOWED_CODECS = {"h264": "H.264", "hevc": "HEVC", "av1": "AV1", "vp8": "VP8", "vp9": "VP9"}
_CODEC_NAMES = {"mpeg4": "MPEG-4 Part 2", "mpeg2video": "MPEG-2", "mpeg1video": "MPEG-1",
                "h263": "H.263", "prores": "ProRes", "mjpeg": "Motion JPEG", "theora": "Theora",
                "dnxhd": "DNxHD", "vvc": "H.266/VVC", "ffv1": "FFV1", "rawvideo": "raw video"}
# A clip may run this much past max_seconds: its last frame's duration is often rounded.
SECONDS_SLACK = 0.25
OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 10.0
DECODER_THREADS = 2
_NO_PROTOCOL = "none"  # a protocol_whitelist naming no protocol: every nested open fails


@dataclass(frozen=True)
class VideoScan:
    """A video's stream and timing, from its headers and packets (no frame decoded)."""

    stream_index: int
    codec: str  # FFmpeg's codec id name: h264, hevc, av1, vp8, vp9
    width: int
    height: int
    pixel_format: str | None
    frame_times_s: tuple[float, ...]  # each frame's presentation start; the first is 0
    duration_s: float
    has_audio: bool


def open_video(data: bytes, fmt: MovingFormat, settings: VideoConfig) -> Any:
    """A PyAV input container over `data`, read by `fmt`'s demuxer under every guard."""
    if fmt.demuxer is None:
        raise ValueError(f"{fmt.name} is not a video container")
    with ffmpeg_errors():
        return open_guarded(data, fmt.demuxer, settings)


def open_guarded(data: bytes, demuxer: str, settings: VideoConfig) -> Any:
    """`av.open` with the guards; `demuxer` is trusted (tests pass playlist demuxers here to
    show the other guards hold on their own)."""
    container_options = {"protocol_whitelist": _NO_PROTOCOL, "max_streams": "32"}
    if demuxer == "mov":
        container_options |= {"enable_drefs": "0", "use_absolute_path": "0"}
    return av.open(io.BytesIO(data), mode="r", format=demuxer,
                   container_options=container_options,
                   # Given to the decoders avformat opens to probe the streams.
                   options=_decoder_options(settings), io_open=_refuse_nested_open,
                   timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))


def _decoder_options(settings: VideoConfig) -> dict[str, str]:
    return {"max_pixels": str(settings.max_pixels), "threads": str(DECODER_THREADS)}


def _refuse_nested_open(url: str, flags: int, options: dict[str, Any]) -> io.BytesIO:
    """Whatever a demuxer asks to open (a playlist entry, a data reference) reads as empty."""
    logger.warning("a video asked FFmpeg to open another resource (%.80r); refused", url)
    return io.BytesIO()


@contextmanager
def ffmpeg_errors() -> Iterator[None]:
    """Translate what FFmpeg and PyAV raise on bad bytes into VideoRejected."""
    try:
        yield
    except VideoRejected:
        raise
    except MemoryError:
        raise VideoRejected("out of memory decoding", code="video_too_many_pixels") from None
    except av.error.ArgumentError:
        # EINVAL: what a decoder answers for a frame above its max_pixels (bad data is
        # AVERROR_INVALIDDATA, below): the stream holds larger frames than its header said.
        raise VideoRejected("frames too large", code="video_too_many_pixels") from None
    except (av.FFmpegError, OSError, ValueError, EOFError, IndexError, OverflowError) as exc:
        logger.debug("video refused: %s: %s", type(exc).__name__, exc)
        raise VideoRejected("damaged or incomplete video", code="video_corrupt") from None


def scan_video(data: bytes, fmt: MovingFormat, settings: VideoConfig) -> VideoScan:
    """Check the declared bounds, then every packet's time, before any frame is decoded."""
    with ffmpeg_errors(), open_guarded(data, fmt.demuxer or "", settings) as container:
        stream = _pick_stream(container)
        time_base = stream.time_base
        if time_base is None or time_base <= 0:
            raise VideoRejected("no time base", code="video_corrupt")
        _check_declared(container, stream, settings)
        read_only(container, stream)
        starts: list[int] = []
        durations: list[int] = []
        seen = 0
        limit = (settings.max_seconds + SECONDS_SLACK) / time_base
        first = last = None
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            seen += 1
            when = packet.pts if packet.pts is not None else packet.dts
            if when is None or packet.is_discard:
                continue  # cut by an edit list, or not meant to be shown
            starts.append(when)
            durations.append(max(packet.duration or 0, 0))
            if len(starts) > settings.max_frames:
                raise VideoRejected("too many frames", code="video_too_many_frames",
                                    max_frames=settings.max_frames)
            first = when if first is None else min(first, when)
            last = when if last is None else max(last, when)
            if last - first > limit:
                raise VideoRejected("video too long", code="video_too_long",
                                    max_seconds=settings.max_seconds)
        if not starts:  # none at all, or none of those the index lists: a cut-off file
            raise VideoRejected("no frames", code="video_corrupt" if stream.frames
                                else "video_no_frames")
        order = sorted(range(len(starts)), key=starts.__getitem__)
        origin = starts[order[0]]
        times = tuple(float((starts[i] - origin) * time_base) for i in order)
        gaps = [b - a for a, b in pairwise(times) if b > a]
        tail = float(durations[order[-1]] * time_base) or (median(gaps) if gaps else 0.1)
        duration = times[-1] + tail
        if duration > settings.max_seconds + SECONDS_SLACK:
            raise VideoRejected("video too long", code="video_too_long",
                                max_seconds=settings.max_seconds)
        _check_complete(container, stream, seen, duration, tail)
        context = stream.codec_context
        return VideoScan(stream_index=stream.index, codec=_codec_id(stream),
                         width=context.width, height=context.height,
                         pixel_format=context.pix_fmt, frame_times_s=times,
                         duration_s=duration, has_audio=bool(container.streams.audio))


def read_only(container: Any, stream: Any) -> None:
    """Have the demuxer skip every other stream's packets (sound, subtitles, data): a file
    with a million tiny packets beside its video costs no more than its video."""
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all


def _codec_id(stream: Any) -> str:
    context = stream.codec_context
    if context is None:  # FFmpeg has no decoder for it at all
        return "unknown"
    name: str = context.codec.canonical_name
    return name


def _pick_stream(container: Any) -> Any:
    """The first video stream in an allowed codec (cover pictures are not the video)."""
    videos = [s for s in container.streams.video
              if not s.disposition & av.stream.Disposition.attached_pic]
    if not videos:
        raise VideoRejected("no video stream", code="video_no_frames")
    for stream in videos:
        if _codec_id(stream) in ALLOWED_CODECS:
            return stream
    codec = _codec_id(videos[0])
    raise VideoRejected(f"{codec} is not an allowed codec", code="unsupported_codec",
                        codec=_CODEC_NAMES.get(codec, codec.upper()))


def _check_declared(container: Any, stream: Any, settings: VideoConfig) -> None:
    """What the headers claim, before the packets are read: a lie to the large is refused."""
    context = stream.codec_context
    check_frame_size(context.width, context.height, settings)
    declared = [container.duration / av.time_base if container.duration else 0.0]
    if stream.duration and stream.time_base:
        declared.append(float(stream.duration * stream.time_base))
    if max(declared) > settings.max_seconds + SECONDS_SLACK:
        raise VideoRejected("video too long", code="video_too_long",
                            max_seconds=settings.max_seconds)
    if stream.frames > settings.max_frames:
        raise VideoRejected("too many frames", code="video_too_many_frames",
                            max_frames=settings.max_frames)


def _check_complete(container: Any, stream: Any, seen: int, duration: float,
                    tail: float) -> None:
    """A cut-off file: fewer packets than the MP4 index lists, or a Matroska stream that ends
    well before the length its header (or its own DURATION tag) gives."""
    if stream.frames and seen < stream.frames:
        raise VideoRejected("truncated video", code="video_corrupt")
    if container.format.name.startswith("matroska"):
        declared = _tag_seconds(stream.metadata.get("DURATION", ""))
        if declared is None and len(container.streams) == 1 and container.duration:
            declared = container.duration / av.time_base
        if declared is not None and declared - duration > max(SECONDS_SLACK, 2 * tail):
            raise VideoRejected("truncated video", code="video_corrupt")


def _tag_seconds(value: str) -> float | None:
    """Matroska's per-stream DURATION tag ("00:00:04.000000000") in seconds."""
    try:
        hours, minutes, seconds = value.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def iter_video_frames(data: bytes, fmt: MovingFormat, scan: VideoScan,
                      settings: VideoConfig) -> Generator[Any, None, None]:
    """Decoded frames (`av.VideoFrame`) in presentation order, one at a time, under the bounds.

    The decoder refuses frames above max_pixels before allocating them; frames are counted and
    timed again here, so a stream that decodes more than its packets promised stops at the
    bound.
    """
    with ffmpeg_errors(), open_guarded(data, fmt.demuxer or "", settings) as container:
        stream = container.streams.video[_video_position(container, scan.stream_index)]
        read_only(container, stream)
        context = stream.codec_context
        context.options = _decoder_options(settings)
        context.thread_count = DECODER_THREADS
        count, origin = 0, None
        for frame in container.decode(stream):
            count += 1
            if count > settings.max_frames:
                raise VideoRejected("too many frames", code="video_too_many_frames",
                                    max_frames=settings.max_frames)
            check_frame_size(frame.width, frame.height, settings)
            if frame.time is not None:
                origin = frame.time if origin is None else origin
                if frame.time - origin > settings.max_seconds + SECONDS_SLACK:
                    raise VideoRejected("video too long", code="video_too_long",
                                        max_seconds=settings.max_seconds)
            yield frame


def _video_position(container: Any, stream_index: int) -> int:
    for position, stream in enumerate(container.streams.video):
        if stream.index == stream_index:
            return position
    raise VideoRejected("video stream vanished", code="video_corrupt")
