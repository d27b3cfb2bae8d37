"""One door for every upload: a still picture goes to `decode_image`, a moving one to
`decode_clip`, and both come back as a `DecodedImage` the job engine takes.

A moving picture keeps its file's bytes beside its decoded frames: the answer is made from
exactly those bytes (its video stream copied or re-encoded, with the new sound), and a job
resumed after a restart decodes them again (deterministic: same frames, same timing).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial

from core.config import ImagesConfig, VideoConfig
from core.errors import VideoRejected
from core.intake.decode import DecodedImage, decode_image
from core.intake.video import DecodedClip, decode_clip
from core.intake.video_sniff import GIF, is_moving_picture, sniff_moving
from core.records import InputKind

INPUT_KINDS = tuple(InputKind)


@dataclass(frozen=True)
class MovingPicture:
    """A validated moving picture and the bytes it was decoded from."""

    data: bytes
    clip: DecodedClip
    # The platform says it is an animation (Telegram sends GIFs as silent MP4s).
    animation: bool = False

    @property
    def kind(self) -> str:
        """"video" or "animation"."""
        return "animation" if self.animation else self.clip.kind


def as_decoded_image(data: bytes, clip: DecodedClip, *, animation: bool = False
                     ) -> DecodedImage:
    """The clip as the engine's picture: its middle captioned frame, the file's hash."""
    middle = clip.frames[len(clip.frames) // 2]
    return DecodedImage(image=middle, sha256=clip.sha256, format=clip.format.name,
                        width=middle.width, height=middle.height,
                        original_size=(clip.width, clip.height),
                        moving=MovingPicture(data, clip, animation))


def decode_upload(data: bytes, images: ImagesConfig, video: VideoConfig,
                  *, max_bytes: int | None = None, animation: bool = False) -> DecodedImage:
    """A still or moving picture from untrusted bytes; raises `ImageRejected` (or
    `VideoRejected`) with the code of the catalogue text to show.

    `max_bytes` narrows `[video] max_bytes` to what the platform lets a bot download. A GIF
    with one frame is a still picture. `animation`: the platform says a video is a GIF.
    """
    if not is_moving_picture(data):
        return decode_image(data, images)
    limit = video.max_bytes if max_bytes is None else min(video.max_bytes, max_bytes)
    if len(data) > limit:
        raise VideoRejected("file too large", code="too_large", max_bytes=limit)
    try:
        clip = decode_clip(data, video)
    except VideoRejected as exc:
        if exc.code == "not_video" and sniff_moving_or_none(data) is GIF:
            return decode_image(data, images)
        raise
    return as_decoded_image(data, clip, animation=animation)


async def decode_upload_async(data: bytes, images: ImagesConfig, video: VideoConfig,
                              *, max_bytes: int | None = None,
                              animation: bool = False) -> DecodedImage:
    """`decode_upload` in a worker thread (FFmpeg and Pillow block)."""
    return await asyncio.to_thread(partial(decode_upload, max_bytes=max_bytes,
                                           animation=animation), data, images, video)


def decode_spooled(data: bytes, video: VideoConfig) -> DecodedImage:
    """A spooled moving picture again (after a restart, or on a worker): same frames."""
    return as_decoded_image(data, decode_clip(data, video))


def moving_of(image: DecodedImage | None) -> MovingPicture | None:
    """The moving picture a decoded upload is, if it is one."""
    moving = image.moving if image is not None else None
    return moving if isinstance(moving, MovingPicture) else None


def input_kind(image: DecodedImage | None) -> InputKind | None:
    """The request log's input kind (None: text jobs)."""
    if image is None:
        return None
    moving = moving_of(image)
    return InputKind(moving.kind) if moving is not None else InputKind.PHOTO


def sniff_moving_or_none(data: bytes) -> object:
    try:
        return sniff_moving(data)
    except VideoRejected:
        return None
