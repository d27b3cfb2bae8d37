"""Animated GIF, WebP and PNG: bounds and timing from the headers, then frames from Pillow.

FFmpeg 8 cannot decode animated WebP, and Pillow already decodes GIF for still pictures, so
every animated picture goes through Pillow: one decoder for the three formats, each frame
composited as browsers show it. Before Pillow sees the bytes, a walk over the file's blocks
(GIF), chunks (PNG) or RIFF chunks (WebP) reads every frame's rectangle and delay without
decoding a pixel, so canvas size, frame count and length are all checked first.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Generator
from dataclasses import dataclass

from PIL import Image

from core.config import VideoConfig
from core.errors import VideoRejected
from core.intake.video_sniff import APNG, GIF, WEBP, MovingFormat

# Browsers show a frame whose delay is 10 ms or less for 100 ms (a convention from the early
# web that animations rely on); the soundtrack follows what people see.
MIN_DELAY_MS = 10
DEFAULT_DELAY_MS = 100


@dataclass(frozen=True)
class AnimationHeader:
    """What the headers say: the canvas Pillow will allocate and each frame's delay."""

    width: int
    height: int
    delays_ms: tuple[int, ...]


def read_header(data: bytes, fmt: MovingFormat, settings: VideoConfig) -> AnimationHeader:
    """Walk the file's structure (no pixel decoded) and check every bound on it."""
    try:
        if fmt is GIF:
            header = _gif(data, settings)
        elif fmt is WEBP:
            header = _webp(data, settings)
        elif fmt is APNG:
            header = _apng(data, settings)
        else:
            raise ValueError(f"{fmt.name} is not an animated picture format")
    except (struct.error, IndexError):
        raise VideoRejected("damaged or incomplete animation", code="video_corrupt") from None
    check_frame_size(header.width, header.height, settings)
    if len(header.delays_ms) < 2:
        raise VideoRejected("a still picture, not an animation", code="not_video")
    if sum(header.delays_ms) > settings.max_seconds * 1000:
        raise VideoRejected("animation too long", code="video_too_long",
                            max_seconds=settings.max_seconds)
    return header


def check_frame_size(width: int, height: int, settings: VideoConfig) -> None:
    """Refuse a frame size before anything of that size is allocated."""
    if width <= 0 or height <= 0:
        raise VideoRejected("zero-sized frames", code="video_bad_dimensions",
                            max_side=settings.max_side)
    if width > settings.max_side or height > settings.max_side \
            or width * height > settings.max_pixels:
        raise VideoRejected("frames too large", code="video_too_many_pixels")


def _delay(ms: float) -> int:
    return DEFAULT_DELAY_MS if ms <= MIN_DELAY_MS else round(ms)


def _count(delays: list[int], settings: VideoConfig) -> None:
    """Stop walking at the bound: a frame-count bomb is refused after max_frames + 1 headers."""
    if len(delays) > settings.max_frames:
        raise VideoRejected("too many frames", code="video_too_many_frames",
                            max_frames=settings.max_frames)


def _skip_sub_blocks(data: bytes, at: int) -> int:
    while data[at]:
        at += data[at] + 1
    return at + 1


def _gif(data: bytes, settings: VideoConfig) -> AnimationHeader:
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    delays: list[int] = []
    delay_cs = 0
    while at < len(data):  # some encoders leave out the trailer
        block = data[at]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: a graphic control block carries the next frame's delay
            if data[at + 1] == 0xF9 and data[at + 2] >= 4:
                delay_cs = struct.unpack_from("<H", data, at + 4)[0]
            at = _skip_sub_blocks(data, at + 2)
        elif block == 0x2C:  # image descriptor
            left, top, w, h, local = struct.unpack_from("<HHHHB", data, at + 1)
            # Pillow grows the canvas to hold a frame that sticks out of the logical screen.
            width, height = max(width, left + w), max(height, top + h)
            check_frame_size(width, height, settings)
            at += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            at = _skip_sub_blocks(data, at + 1)  # + the LZW minimum code size
            delays.append(_delay(delay_cs * 10))
            _count(delays, settings)
            delay_cs = 0
        else:
            raise VideoRejected("unknown GIF block", code="video_corrupt")
    return AnimationHeader(width, height, tuple(delays))


def _apng(data: bytes, settings: VideoConfig) -> AnimationHeader:
    at, width, height, declared = 8, 0, 0, -1
    delays: list[int] = []
    while True:
        length, kind = struct.unpack_from(">I4s", data, at)
        if at + 12 + length > len(data):
            raise VideoRejected("truncated PNG chunk", code="video_corrupt")
        body = at + 8
        if kind == b"IHDR":
            width, height = struct.unpack_from(">II", data, body)
            check_frame_size(width, height, settings)
        elif kind == b"acTL":
            declared = struct.unpack_from(">I", data, body)[0]
            if declared > settings.max_frames:
                raise VideoRejected("too many frames", code="video_too_many_frames",
                                    max_frames=settings.max_frames)
        elif kind == b"fcTL":
            w, h, x, y, num, den = struct.unpack_from(">IIIIHH", data, body + 4)
            if x + w > width or y + h > height or not w or not h:
                raise VideoRejected("APNG frame outside the canvas", code="video_corrupt")
            delays.append(_delay(num * 1000 / (den or 100)))
            _count(delays, settings)
        elif kind == b"IEND":
            break
        at += 12 + length
    if declared != len(delays):
        raise VideoRejected("APNG frame count mismatch", code="video_corrupt")
    return AnimationHeader(width, height, tuple(delays))


def _u24(data: bytes, at: int) -> int:
    value: int = int.from_bytes(data[at:at + 3], "little")
    return value


def _webp(data: bytes, settings: VideoConfig) -> AnimationHeader:
    width, height = _u24(data, 24) + 1, _u24(data, 27) + 1
    check_frame_size(width, height, settings)
    end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    at = 12
    delays: list[int] = []
    while at + 8 <= end:
        kind, length = struct.unpack_from("<4sI", data, at)
        body = at + 8
        if body + length > end:
            raise VideoRejected("truncated WebP chunk", code="video_corrupt")
        if kind == b"ANMF":
            x, y = _u24(data, body) * 2, _u24(data, body + 3) * 2
            w, h = _u24(data, body + 6) + 1, _u24(data, body + 9) + 1
            if x + w > width or y + h > height:
                raise VideoRejected("WebP frame outside the canvas", code="video_corrupt")
            delays.append(_delay(_u24(data, body + 12)))
            _count(delays, settings)
        at = body + length + (length & 1)
    return AnimationHeader(width, height, tuple(delays))


def iter_animation(data: bytes, fmt: MovingFormat, header: AnimationHeader,
                   settings: VideoConfig) -> Generator[Image.Image, None, None]:
    """Each frame as a browser shows it, opaque RGB (transparency on white), one at a time.

    The frame yielded is the caller's: it is not touched again once the next one is asked for.
    Raises VideoRejected(video_corrupt) when Pillow finds fewer frames than the headers list.
    """
    assert fmt.pillow is not None
    with Image.open(io.BytesIO(data), formats=[fmt.pillow]) as image:
        # An APNG whose IDAT is not part of the animation shows it to still-image viewers only.
        first = 1 if fmt is APNG and getattr(image, "default_image", False) else 0
        if getattr(image, "n_frames", 1) - first != len(header.delays_ms):
            raise VideoRejected("frame count differs from the headers", code="video_corrupt")
        for index in range(first, first + len(header.delays_ms)):
            image.seek(index)
            check_frame_size(image.width, image.height, settings)
            image.load()
            yield _opaque(image)


def _opaque(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
