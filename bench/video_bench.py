"""Video benchmark: how long decoding a clip and muxing its soundtrack take, per input kind.

Usage: .venv/bin/python bench/video_bench.py [--seconds 10] [--size 1280x720] [--fps 30]

Builds synthetic clips in memory (moving shapes over a gradient, some noise: compresses like
camera footage, not like flat colour), then times `decode_clip` (bounds, timing, the frames to
caption) and `add_soundtrack` (the answer MP4) for: H.264 MP4 (video stream-copied), VP9 WebM
(decoded and encoded to H.264) and an animated GIF (Pillow, then H.264), at 25 fps. Prints
one row each, and the peak resident memory of the whole run.
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np
from PIL import Image

from core.audio.video import add_soundtrack
from core.config import VideoConfig
from core.intake.video import decode_clip


def frames(count: int, width: int, height: int) -> Iterator[np.ndarray]:
    """One picture at a time, so the run's peak memory is the decoder's and the muxer's."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    for i in range(count):
        picture = base.astype(np.int16)
        cx, cy = (i * 7) % width, (i * 3) % height
        picture[max(0, cy - 40):cy + 40, max(0, cx - 60):cx + 60] = (240, 200, 40)
        picture += rng.integers(-12, 12, picture.shape, dtype=np.int16)
        yield np.clip(picture, 0, 255).astype(np.uint8)


def encode(container: str, codec: str, pictures: Iterator[np.ndarray], size: tuple[int, int],
           fps: int) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"clip.{container}"
        with av.open(str(path), "w", format=container) as out:
            stream = out.add_stream(codec, rate=fps)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            for index, picture in enumerate(pictures):
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts = index
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return path.read_bytes()


def gif(pictures: Iterator[np.ndarray], fps: int) -> bytes:
    images = [Image.fromarray(p).quantize(64) for p in pictures]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    count, gif_fps = round(args.seconds * args.fps), 25
    inputs = {
        f"H.264 MP4 {width}×{height} (copied)":
            encode("mp4", "libx264", frames(count, width, height), (width, height), args.fps),
        f"VP9 WebM {width}×{height} (encoded)":
            encode("webm", "libvpx-vp9", frames(count, width, height), (width, height),
                   args.fps),
        f"GIF {width // 2}×{height // 2} (encoded)":
            gif(frames(round(args.seconds * gif_fps), width // 2, height // 2), gif_fps),
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    settings = VideoConfig(max_seconds=max(20.0, args.seconds + 1))
    rate = 16_000
    sound = (0.3 * np.sin(np.arange(round(10 * rate)) * 2 * np.pi * 440 / rate)).astype(
        np.float32)
    print(f"{args.seconds:g} s clips; a 10 s sound (AudioLDM's 16 kHz mono); times on this CPU")
    print(f"{'input':34} {'MB in':>6} {'decode s':>9} {'mux s':>7} {'MB out':>7}  fit")
    for name, data in inputs.items():
        started = time.perf_counter()
        clip = decode_clip(data, settings)
        decoded = time.perf_counter()
        answer = add_soundtrack(data, clip, sound, rate, settings)
        muxed = time.perf_counter()
        size = len(answer.data or b"") / 1e6
        print(f"{name:34} {len(data) / 1e6:6.2f} {decoded - started:9.2f} "
              f"{muxed - decoded:7.2f} {size:7.2f}  {answer.fit.value}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {before:.0f} MB after building the inputs, "
          f"{peak:.0f} MB after decoding and muxing them")


if __name__ == "__main__":
    main()
