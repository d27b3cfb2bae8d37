"""What a moving picture changes about a job: the sound's length, and the MP4 answer.

A video's sound spans the clip, so its length comes from the clip, not from the user's
option: `min(clip length, [generation] max_seconds)`, rounded up to a tenth of a second so
that clips of about the same length share a diffusion call (jobs batch on equal options).
A longer clip gets a sound looped over it (`SoundFit.LOOPED`, and the reply says so); the
muxer cuts the last tenth exactly to the video's length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.audio.video import PAD_S, add_soundtrack
from core.config import GenerationConfig, VideoConfig
from core.files import write_atomically
from core.jobs.request import VIDEO_FORMAT, JobRequest, video_seconds
from core.records import OutputKind, SoundFit


def fitted_to_video(request: JobRequest, generation: GenerationConfig) -> JobRequest:
    """`request` with the sound's length set from its video (unchanged for a picture)."""
    video = request.video
    if video is None:
        return request
    seconds = video_seconds(video.clip.timing.duration_s, generation)
    if request.options.seconds == seconds:
        return request
    return dataclasses.replace(request,
                               options=dataclasses.replace(request.options, seconds=seconds))


@dataclass(frozen=True)
class AnswerShape:
    """What a finished job hands back: audio, a video, or the sound alone (too large)."""

    output_kind: OutputKind
    sound_fit: SoundFit | None  # for moving pictures
    input_seconds: float | None
    video_cap_bytes: int | None = None


def answer_shape(request: JobRequest, files: dict[str, Path], sound_s: float) -> AnswerShape:
    """The answer of `request` from its clip's files and the sound's length (the muxer's
    rule: a sound shorter than the clip by more than PAD_S repeats)."""
    video = request.video
    if video is None:
        return AnswerShape(OutputKind.AUDIO, None, None)
    seconds = video.clip.timing.duration_s
    fit = SoundFit.LOOPED if sound_s < seconds - PAD_S else SoundFit.WHOLE
    kind = OutputKind.VIDEO if VIDEO_FORMAT in files else OutputKind.AUDIO_ONLY
    return AnswerShape(kind, fit, seconds, request.video_cap_bytes)


def write_answer_video(root: Path, clip_id: str, request: JobRequest, audio: np.ndarray,
                       rate: int, settings: VideoConfig) -> Path | None:
    """Mux the sound into the request's video under `root` (blocking: run it in a thread);
    None when it cannot fit the request's cap (the sound goes alone)."""
    video = request.video
    assert video is not None
    answer = add_soundtrack(video.data, video.clip, audio, rate, settings,
                            max_bytes=request.video_cap_bytes)
    if answer.data is None:
        return None
    path = root / f"{clip_id}.{VIDEO_FORMAT}"
    write_atomically(path, answer.data)
    return path
