"""Moving pictures in: videos (MP4, MOV, WebM, Matroska) and animated GIF, WebP and PNG.

`decode_clip` is the one entry point for all of them: it sniffs the container from the bytes
already fetched (never a path or a URL), checks every bound from the headers and timestamps
before a frame is decoded, then decodes a few frames spread over the clip for the captioner,
lazily (one frame held at a time, plus the ones kept). The only exception it lets out for bad
input is `VideoRejected` (an `ImageRejected`), whose `code` selects the reply text.

Videos go through PyAV (`core.intake.video_demux`), animated pictures through Pillow
(`core.intake.animation`): FFmpeg cannot decode animated WebP, and Pillow composites all three
formats' frames as browsers do. Both give the same `DecodedClip`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from core.config import VideoConfig
from core.errors import VideoRejected
from core.intake.animation import iter_animation, read_header
from core.intake.decode import WORKING_SIDE
from core.intake.video_demux import ALLOWED_CODECS, ffmpeg_errors, iter_video_frames, scan_video
from core.intake.video_sniff import MovingFormat, sniff_moving

# Pixel formats a phone or a browser plays from H.264 as they are: copied, not re-encoded.
_COPYABLE_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p"})
# Rotation (counter-clockwise degrees, as the display matrix says) -> the upright transpose.
_UPRIGHT = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270,
            270: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
            -180: Image.Transpose.ROTATE_180}


@dataclass(frozen=True)
class ClipTiming:
    """When each frame is shown: variable frame rates (GIF delays, phone videos) kept."""

    frame_times_s: tuple[float, ...]  # presentation start of each frame; the first is 0
    duration_s: float  # to the end of the last frame

    @property
    def frame_count(self) -> int:
        return len(self.frame_times_s)

    @property
    def frame_durations_s(self) -> tuple[float, ...]:
        ends = (*self.frame_times_s[1:], self.duration_s)
        return tuple(end - start for start, end in zip(self.frame_times_s, ends, strict=True))

    @property
    def frame_rate(self) -> float:
        """Frames per second on average."""
        return self.frame_count / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def variable(self) -> bool:
        durations = self.frame_durations_s
        return max(durations) - min(durations) > 0.002  # more than rounding to milliseconds


@dataclass(frozen=True)
class DecodedClip:
    """A validated moving picture: its timing and a few upright RGB frames for the captioner."""

    format: MovingFormat
    codec: str  # h264, hevc, av1, vp8, vp9; gif, webp or apng for animated pictures
    width: int  # of the coded frames (before rotation)
    height: int
    rotation: int  # counter-clockwise degrees the display matrix turns the frames by
    timing: ClipTiming
    frames: tuple[Image.Image, ...]  # at most WORKING_SIDE px, upright, opaque RGB
    frame_indices: tuple[int, ...]  # which frames those are, in presentation order
    sha256: str  # of the file's bytes: the video sent back is made from exactly these
    has_audio: bool
    stream_copy: bool  # H.264 4:2:0 in MP4/MOV: the answer keeps its video packets as they are

    @property
    def kind(self) -> str:
        """"video" or "animation" (the request log's input kind)."""
        return self.format.kind

    @property
    def frame_times_s(self) -> tuple[float, ...]:
        """When each captioned frame is shown."""
        return tuple(self.timing.frame_times_s[i] for i in self.frame_indices)


def spread(count: int, picks: int) -> tuple[int, ...]:
    """`picks` frame indices spread evenly over `count` frames (the middle of each share)."""
    if count <= picks:
        return tuple(range(count))
    return tuple(int((i + 0.5) * count / picks) for i in range(picks))


def decode_clip(data: bytes, settings: VideoConfig) -> DecodedClip:
    """Validate untrusted bytes and decode the frames to caption; raises VideoRejected."""
    if len(data) > settings.max_bytes:
        raise VideoRejected("file too large", code="too_large", max_bytes=settings.max_bytes)
    fmt = sniff_moving(data)
    digest = hashlib.sha256(data).hexdigest()
    if fmt.demuxer is not None:
        return _decode_video(data, fmt, digest, settings)
    return _decode_animation(data, fmt, digest, settings)


async def decode_clip_async(data: bytes, settings: VideoConfig) -> DecodedClip:
    """`decode_clip` in a worker thread, so the event loop keeps serving chats."""
    return await asyncio.to_thread(decode_clip, data, settings)


def _decode_video(data: bytes, fmt: MovingFormat, digest: str,
                  settings: VideoConfig) -> DecodedClip:
    scan = scan_video(data, fmt, settings)
    timing = ClipTiming(scan.frame_times_s, scan.duration_s)
    wanted = spread(timing.frame_count, settings.caption_frames)
    kept: list[Image.Image] = []
    indices: list[int] = []
    rotation = 0
    frames = iter_video_frames(data, fmt, scan, settings)
    with ffmpeg_errors():
        try:
            for index, frame in enumerate(frames):
                if index == 0:
                    rotation = round((frame.rotation or 0) / 90) * 90
                if index in wanted:
                    kept.append(_upright(_frame_image(frame), rotation))
                    indices.append(index)
                if index >= wanted[-1]:
                    break
        finally:
            frames.close()  # closes the container now, not whenever the generator is collected
    if not kept:
        raise VideoRejected("no frame decoded", code="video_no_frames")
    copyable = (fmt.demuxer == "mov" and scan.codec == "h264"
                and scan.pixel_format in _COPYABLE_PIXEL_FORMATS)
    return DecodedClip(format=fmt, codec=scan.codec, width=scan.width, height=scan.height,
                       rotation=rotation, timing=timing, frames=tuple(kept),
                       frame_indices=tuple(indices), sha256=digest, has_audio=scan.has_audio,
                       stream_copy=copyable)


def _decode_animation(data: bytes, fmt: MovingFormat, digest: str,
                      settings: VideoConfig) -> DecodedClip:
    header = read_header(data, fmt, settings)
    starts, total = [], 0
    for delay in header.delays_ms:
        starts.append(total / 1000)
        total += delay
    timing = ClipTiming(tuple(starts), total / 1000)
    wanted = spread(timing.frame_count, settings.caption_frames)
    kept: list[Image.Image] = []
    frames = iter_animation(data, fmt, header, settings)
    try:
        for index, image in enumerate(frames):
            if index in wanted:
                kept.append(_shrink(image))
            if index >= wanted[-1]:
                break
    except VideoRejected:
        raise
    except MemoryError:
        raise VideoRejected("out of memory decoding", code="video_too_many_pixels") from None
    except Exception as exc:  # Pillow raises many types for damaged files; all mean "corrupt".
        raise VideoRejected(f"damaged animation ({type(exc).__name__})",
                            code="video_corrupt") from None
    finally:
        frames.close()
    return DecodedClip(format=fmt, codec=fmt.name.lower(), width=header.width,
                       height=header.height, rotation=0, timing=timing, frames=tuple(kept),
                       frame_indices=wanted, sha256=digest, has_audio=False, stream_copy=False)


def _frame_image(frame: Any) -> Image.Image:
    """A decoded video frame as RGB at most WORKING_SIDE px, scaled by swscale on the way."""
    width, height = _fit((frame.width, frame.height), WORKING_SIDE)
    image: Image.Image = frame.to_image(width=width, height=height)
    return image


def _shrink(image: Image.Image) -> Image.Image:
    if max(image.size) > WORKING_SIDE:
        image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def _upright(image: Image.Image, rotation: int) -> Image.Image:
    transpose = _UPRIGHT.get(rotation)
    return image.transpose(transpose) if transpose is not None else image


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def iter_clip_frames(data: bytes, clip: DecodedClip,
                     settings: VideoConfig) -> Iterator[tuple[Any, float]]:
    """Every frame of a decoded clip with its presentation start in seconds (the first at 0),
    one at a time, for re-encoding: `av.VideoFrame`s from videos, RGB `PIL.Image`s from
    animated pictures. The same guards and bounds as `decode_clip` apply."""
    times = clip.timing.frame_times_s
    if clip.format.demuxer is None:
        header = read_header(data, clip.format, settings)
        for index, image in enumerate(iter_animation(data, clip.format, header, settings)):
            yield image, times[index]
        return
    scan = scan_video(data, clip.format, settings)
    origin = None
    for frame in iter_video_frames(data, clip.format, scan, settings):
        when = float(frame.time) if frame.time is not None else None
        if when is None:
            continue
        origin = when if origin is None else origin
        yield frame, when - origin


__all__ = ["ALLOWED_CODECS", "ClipTiming", "DecodedClip", "decode_clip", "decode_clip_async",
           "iter_clip_frames", "spread"]
