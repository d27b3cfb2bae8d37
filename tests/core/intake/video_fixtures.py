"""Moving pictures, good and hostile, built in memory with PyAV and Pillow (nothing downloaded).

Every frame is one flat colour whose red level says its index (`INDEX_STEP` per frame), so a
test can tell which frames the decoder picked, even after lossy encoding.
"""

from __future__ import annotations

import io
import struct
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

INDEX_STEP = 8


def frame_colour(index: int) -> tuple[int, int, int]:
    return ((index * INDEX_STEP) % 256, 96, 160)


def frame_index(image: Image.Image) -> int:
    """The index a frame was drawn with, read back from its mean red level."""
    red = float(np.asarray(image.convert("RGB"))[..., 0].mean())
    return round(red / INDEX_STEP)


def _picture(index: int, size: tuple[int, int], noise: bool = False) -> np.ndarray:
    width, height = size
    if noise:  # compresses badly: a large file from few frames
        return np.random.default_rng(index).integers(0, 256, (height, width, 3), np.uint8)
    return np.broadcast_to(np.array(frame_colour(index), np.uint8), (height, width, 3)).copy()


def encode_video(container: str = "mp4", codec: str = "libx264", *, frames: int = 30,
                 rate: int = 15, size: tuple[int, int] = (64, 48), faststart: bool = False,
                 times: Sequence[float] | None = None, rotation: int = 0,
                 options: dict[str, str] | None = None, pixel_format: str = "yuv420p",
                 audio_seconds: float = 0.0, noise: bool = False) -> bytes:
    """A clip of `frames` flat frames at `rate` fps (or at `times`, in seconds: variable).

    Written through a private file: the MP4 muxer re-reads its output for `+faststart`.
    """
    container_options = {"movflags": "+faststart"} if faststart else {}
    codec_options = dict(options or {})
    if codec == "libx265":
        codec_options.setdefault("x265-params", "log-level=error")
    if codec == "libvpx":  # its default bitrate blurs one frame's colour into the next
        codec_options = {"b": "1M", "crf": "4"} | codec_options
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"clip.{container}"
        with av.open(str(path), "w", format=container, options=container_options) as out:
            stream = out.add_stream(codec, rate=rate, options=codec_options)
            stream.width, stream.height = size
            stream.pix_fmt = pixel_format
            if times is not None:
                stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
            if rotation:
                stream.set_display_rotation(rotation)
            if audio_seconds:
                _add_silence(out, audio_seconds)
            for index in range(frames):
                frame = av.VideoFrame.from_ndarray(_picture(index, size, noise), format="rgb24")
                if times is None:
                    frame.pts = index
                else:
                    frame.pts, frame.time_base = round(times[index] * 1000), Fraction(1, 1000)
                for packet in stream.encode(frame.reformat(format=pixel_format)):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return path.read_bytes()


def _add_silence(out: av.container.OutputContainer, seconds: float) -> None:
    codec = "aac" if out.format.name.startswith("mp4") else "libopus"
    stream = out.add_stream(codec, rate=48_000, layout="mono")
    samples = np.zeros((1, round(seconds * 48_000)), np.float32)
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate, frame.pts = 48_000, 0
    for packet in [*stream.encode(frame), *stream.encode(None)]:
        out.mux(packet)


def animation(fmt: str, delays_ms: Sequence[int], size: tuple[int, int] = (48, 32)) -> bytes:
    """An animated GIF, WEBP or PNG (APNG) with one flat frame per delay."""
    frames = [Image.fromarray(_picture(i, size)) for i in range(len(delays_ms))]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=list(delays_ms),
                   loop=0, **({"lossless": True} if fmt == "WEBP" else {}))
    return out.getvalue()


# A hand-made GIF: the classic one-pixel image data (LZW minimum code size 2: clear, 0, end).
_ONE_PIXEL = b"\x02\x02\x44\x01\x00"


def raw_gif(screen: tuple[int, int], frames: Sequence[tuple[int, int, int, int]],
            delay_cs: int = 5) -> bytes:
    """A GIF whose logical screen and image descriptors say anything; each frame holds the
    one-pixel image data whatever size its descriptor claims."""
    body = [b"GIF89a", struct.pack("<HHBBB", *screen, 0x80, 0, 0), b"\x00\x00\x00\xff\xff\xff"]
    for left, top, width, height in frames:
        body.append(b"\x21\xf9\x04\x00" + struct.pack("<H", delay_cs) + b"\x00\x00")
        body.append(b"\x2c" + struct.pack("<HHHHB", left, top, width, height, 0) + _ONE_PIXEL)
    body.append(b"\x3b")
    return b"".join(body)


def _box(data: bytes, kind: bytes, start: int = 0) -> int:
    """The offset of the first ISO BMFF box of `kind` at or after `start` (its size field)."""
    return data.index(kind, start) - 4


def patch_mp4_ten_hours(data: bytes) -> bytes:
    """An MP4 (one stts entry) whose movie, track, edit list and sample table all claim ten
    hours: each sample's duration scaled up so the samples span them."""
    out = bytearray(data)
    stts = _box(data, b"stts")
    count = struct.unpack_from(">I", data, stts + 16)[0]
    mdhd = _box(data, b"mdhd")
    track_scale = struct.unpack_from(">I", data, mdhd + 20)[0]
    struct.pack_into(">I", out, stts + 20, 36_000 * track_scale // count)
    struct.pack_into(">I", out, mdhd + 24, 36_000 * track_scale)
    mvhd = _box(data, b"mvhd")
    movie_scale = struct.unpack_from(">I", data, mvhd + 20)[0]
    struct.pack_into(">I", out, mvhd + 24, 36_000 * movie_scale)
    if b"elst" in data:
        elst = _box(data, b"elst")
        struct.pack_into(">I", out, elst + 16, 36_000 * movie_scale)
    return bytes(out)


def patch_webm_duration(data: bytes, seconds: float) -> bytes:
    """A WebM whose Segment Info says it lasts `seconds` (the float after the Duration ID)."""
    at = data.index(b"\x44\x89")
    size = data[at + 2] & 0x7F
    packed = struct.pack(">d" if size == 8 else ">f", seconds * 1000)
    return data[:at + 3] + packed + data[at + 3 + size:]


def patch_mp4_sample_size(data: bytes, width: int, height: int) -> bytes:
    """An MP4 whose avc1 sample entry and track header claim `width`×`height`."""
    out = bytearray(data)
    avc1 = data.index(b"avc1", data.index(b"stsd")) - 4
    struct.pack_into(">HH", out, avc1 + 32, width, height)
    tkhd = _box(data, b"tkhd")
    end = tkhd + struct.unpack_from(">I", data, tkhd)[0]
    struct.pack_into(">II", out, end - 8, width << 16, height << 16)
    return bytes(out)


def zero_frame_video(container: str) -> bytes:
    """A file with a video stream and no video frames (its sound track alone has packets)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"empty.{container}"
        with av.open(str(path), "w", format=container) as out:
            video = out.add_stream("libx264" if container == "mp4" else "libvpx-vp9", rate=10)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            _add_silence(out, 1.0)
        return path.read_bytes()


def resolution_switch(small: tuple[int, int] = (64, 48),
                      large: tuple[int, int] = (640, 480)) -> bytes:
    """A VP8 WebM that declares `small` frames, then switches to `large` at frame 5."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "switch.webm"
        with av.open(str(path), "w", format="webm") as out:
            stream = out.add_stream("libvpx", rate=10)
            stream.width, stream.height = small
            stream.pix_fmt = "yuv420p"
            second = av.CodecContext.create("libvpx", "w")
            second.width, second.height = large
            second.pix_fmt, second.time_base = "yuv420p", Fraction(1, 10)
            for index in range(10):
                context, size = (stream, small) if index < 5 else (second, large)
                frame = av.VideoFrame.from_ndarray(_picture(index, size), format="rgb24")
                frame = frame.reformat(format="yuv420p")
                frame.pts, frame.time_base = index, Fraction(1, 10)
                if index == 5:
                    for packet in stream.encode(None):
                        out.mux(packet)
                for packet in context.encode(frame):
                    packet.stream = stream
                    out.mux(packet)
            for packet in second.encode(None):
                packet.stream = stream
                out.mux(packet)
        return path.read_bytes()


def hls_playlist(port: int, secret: Path) -> bytes:
    return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n"
            f"#EXTINF:10,\nhttp://127.0.0.1:{port}/segment0.ts\n"
            f"#EXTINF:10,\nfile:{secret}\n#EXTINF:10,\n{secret}\n#EXT-X-ENDLIST\n").encode()


def ffconcat_list(port: int, secret: Path) -> bytes:
    return (f"ffconcat version 1.0\nfile '{secret}'\nfile 'file:{secret}'\n"
            f"file 'http://127.0.0.1:{port}/clip.mp4'\n").encode()
