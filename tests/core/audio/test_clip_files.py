"""The files a finished clip becomes: stereo where the format allows, mono for voice notes."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import soundfile as sf

from core.jobs.cache import CLIP_FORMATS, VOICE_FORMAT, ClipCache
from core.storage.request_log import RequestLog

RATE = 44_100


def cache(root: Path) -> ClipCache:
    # Writing files never touches the request log (indexing them does, in `add`).
    return ClipCache(cast(RequestLog, None), root, max_bytes=10_000_000)


def tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_stereo_clip_files_are_stereo_and_the_voice_note_is_mono(tmp_path: Path) -> None:
    stereo = np.stack([tone(2.0, 220.0), tone(2.0, 330.0)])
    files, duration = cache(tmp_path).write("clip1", stereo, RATE)
    assert set(files) == {*CLIP_FORMATS, VOICE_FORMAT}
    for fmt in CLIP_FORMATS:
        info = sf.info(files[fmt])
        assert info.channels == 2, fmt
        assert abs(info.frames / info.samplerate - 2.0) <= 0.1
    voice = sf.info(files[VOICE_FORMAT])
    assert (voice.channels, voice.format, voice.subtype) == (1, "OGG", "OPUS")
    assert abs(voice.frames / voice.samplerate - duration) <= 0.05
    audio, _ = sf.read(files[VOICE_FORMAT], dtype="float32")
    assert 0.5 < float(np.abs(audio).max()) <= 1.0  # normalised after the downmix


def test_mono_clips_need_no_separate_voice_note(tmp_path: Path) -> None:
    files, _ = cache(tmp_path).write("clip2", tone(1.0, 440.0), 16_000)
    assert set(files) == set(CLIP_FORMATS)
    assert all(sf.info(path).channels == 1 for path in files.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip2.mp3", "clip2.ogg"]
