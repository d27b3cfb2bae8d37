"""What every platform adds to the answer of a moving picture, in the user's language."""

from __future__ import annotations

import asyncio
import logging

from core.config import Config
from core.errors import ImageRejected
from core.i18n import t
from core.intake.decode import DecodedImage
from core.intake.moving import decode_upload_async
from core.jobs.contract import JobEngine
from core.jobs.events import JobResult
from core.records import MOVING_INPUTS, OutputKind, RequestRecord, SoundFit

logger = logging.getLogger(__name__)

VIDEO_FILE = "mp4"  # the key of the video with its sound among a result's files


def video_of(result: JobResult) -> bool:
    """True when the answer is the video with its sound (files["mp4"])."""
    return result.output_kind == OutputKind.VIDEO and VIDEO_FILE in result.files


def video_notes(result: JobResult, lang: str) -> list[str]:
    """The lines a moving picture's answer carries: the sound loops over a longer clip; the
    video was too large for this platform, so the sound comes alone."""
    notes: list[str] = []
    if result.output_kind == OutputKind.AUDIO_ONLY:
        cap_mb = round((result.video_cap_bytes or 0) / 1e6, 1)
        notes.append(t("video.too_large", lang, max_mb=cap_mb))
    if result.sound_fit == SoundFit.LOOPED and result.input_seconds:
        notes.append(t("video.looped", lang, sound_s=round(result.duration_s, 1),
                       clip_s=result.input_seconds))
    return notes


async def video_to_retake(engine: JobEngine, record: RequestRecord,
                          config: Config) -> DecodedImage | None:
    """The video a new take of a moving picture's answer is muxed into: that answer's MP4
    (the same frames and timing, its H.264 copied as it is); None for a picture, or when the
    answer was the sound alone or has left the cache (then the new take is a sound)."""
    if record.input_kind not in MOVING_INPUTS:
        return None
    files = await engine.clip_files(record)
    if not files or VIDEO_FILE not in files:
        return None
    try:
        data = await asyncio.to_thread(files[VIDEO_FILE].read_bytes)
        return await decode_upload_async(data, config.images, config.video)
    except (OSError, ImageRejected) as exc:
        logger.warning("the video of %s cannot be taken again (%s)", record.id, exc)
        return None
