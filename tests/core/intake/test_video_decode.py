"""Moving pictures that should work: every container and codec, the frames picked, the timing."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core.config import VideoConfig
from core.errors import VideoRejected
from core.intake.animation import DEFAULT_DELAY_MS
from core.intake.video import decode_clip, decode_clip_async, spread
from core.intake.video_sniff import is_moving_picture, sniff_moving
from tests.core.intake.video_fixtures import animation, encode_video, frame_index

SETTINGS = VideoConfig()


def test_spread_picks_the_middle_of_equal_shares() -> None:
    assert spread(30, 3) == (5, 15, 25)
    assert spread(2, 3) == (0, 1)
    assert spread(7, 1) == (3,)


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "GIF"), ("WEBP", "WebP"), ("PNG", "APNG")])
def test_animated_pictures_keep_every_frame_and_its_delay(fmt: str, name: str) -> None:
    delays = [100, 250, 40, 300, 120, 60, 500]
    clip = decode_clip(animation(fmt, delays), SETTINGS)
    assert (clip.format.name, clip.kind, clip.codec) == (name, "animation", name.lower())
    assert clip.timing.frame_count == 7
    assert clip.timing.frame_durations_s == pytest.approx([d / 1000 for d in delays])
    assert clip.timing.duration_s == pytest.approx(sum(delays) / 1000)
    assert clip.timing.variable
    assert clip.frame_indices == (1, 3, 5)  # spread over the seven frames, not the first
    assert [frame_index(f) for f in clip.frames] == [1, 3, 5]
    assert clip.frame_times_s == pytest.approx([0.1, 0.39, 0.81])
    assert all(f.mode == "RGB" and f.size == (48, 32) for f in clip.frames)
    assert not clip.stream_copy and not clip.has_audio


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_a_delay_of_ten_milliseconds_or_less_lasts_as_long_as_browsers_show_it(fmt: str) -> None:
    clip = decode_clip(animation(fmt, [0, 10, 200]), SETTINGS)
    assert clip.timing.frame_durations_s == pytest.approx(
        [DEFAULT_DELAY_MS / 1000, DEFAULT_DELAY_MS / 1000, 0.2])


VIDEOS = [
    ("mp4", "libx264", "MP4", "h264", True),
    ("mov", "libx264", "MOV", "h264", True),
    ("mp4", "libx265", "MP4", "hevc", False),
    ("mp4", "libsvtav1", "MP4", "av1", False),
    ("webm", "libvpx-vp9", "WebM", "vp9", False),
    ("webm", "libvpx", "WebM", "vp8", False),
    ("webm", "libsvtav1", "WebM", "av1", False),
    ("matroska", "libx264", "Matroska", "h264", False),
]


@pytest.mark.parametrize(("container", "encoder", "name", "codec", "copyable"), VIDEOS)
def test_every_allowed_container_and_codec_decodes(container: str, encoder: str, name: str,
                                                    codec: str, copyable: bool) -> None:
    data = encode_video(container, encoder, frames=30, rate=15)
    clip = decode_clip(data, SETTINGS)
    assert (clip.format.name, clip.kind, clip.codec) == (name, "video", codec)
    assert clip.timing.frame_count == 30
    assert clip.timing.duration_s == pytest.approx(2.0, abs=0.002)
    assert clip.timing.frame_rate == pytest.approx(15, abs=0.05)
    assert clip.frame_indices == (5, 15, 25)
    assert [frame_index(f) for f in clip.frames] == [5, 15, 25]
    assert clip.frame_times_s == pytest.approx([5 / 15, 1.0, 25 / 15], abs=0.002)
    assert clip.stream_copy is copyable  # H.264 in MP4/MOV only: Matroska is re-muxed anew
    assert (clip.width, clip.height) == (64, 48)


def test_a_variable_frame_rate_keeps_each_frames_time() -> None:
    times = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.2, 1.3, 1.35]
    clip = decode_clip(encode_video("mp4", times=times, frames=len(times)), SETTINGS)
    assert clip.timing.frame_times_s == pytest.approx(times, abs=0.001)
    assert clip.timing.variable


def test_a_rotated_phone_video_is_captioned_upright() -> None:
    clip = decode_clip(encode_video("mp4", size=(64, 48), rotation=90), SETTINGS)
    assert clip.rotation == 90
    assert all(f.size == (48, 64) for f in clip.frames)
    assert clip.stream_copy


def test_h264_that_is_not_420_is_encoded_again_not_copied() -> None:
    clip = decode_clip(encode_video("mp4", pixel_format="yuv444p"), SETTINGS)
    assert clip.codec == "h264" and not clip.stream_copy


def test_a_video_with_its_own_sound_is_accepted() -> None:
    clip = decode_clip(encode_video("mp4", audio_seconds=2.0), SETTINGS)
    assert clip.has_audio and clip.timing.frame_count == 30


def test_large_frames_are_shrunk_for_the_captioner() -> None:
    clip = decode_clip(encode_video("webm", "libvpx", frames=4, size=(1600, 900)), SETTINGS)
    assert all(f.size == (1024, 576) for f in clip.frames)


def test_the_digest_tells_clips_apart_by_their_bytes() -> None:
    one = decode_clip(encode_video("mp4", frames=10), SETTINGS)
    other = decode_clip(encode_video("mp4", frames=11), SETTINGS)
    assert one.sha256 != other.sha256 and len(one.sha256) == 64


async def test_decoding_off_the_event_loop() -> None:
    clip = await decode_clip_async(animation("GIF", [100, 100]), SETTINGS)
    assert clip.timing.frame_count == 2


def _still(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, fmt)
    return out.getvalue()


def test_moving_pictures_are_told_apart_from_still_ones() -> None:
    assert is_moving_picture(encode_video("mp4", frames=2))
    assert is_moving_picture(encode_video("webm", "libvpx", frames=2))
    assert is_moving_picture(animation("WEBP", [100, 100]))
    assert is_moving_picture(animation("PNG", [100, 100]))
    for fmt in ("PNG", "WEBP", "JPEG", "BMP"):
        assert not is_moving_picture(_still(fmt)), fmt
    # A GIF is the decoder's to count: one frame is a still picture, refused as a clip.
    with pytest.raises(VideoRejected) as refused:
        decode_clip(_still("GIF"), SETTINGS)
    assert refused.value.code == "not_video"


def test_the_container_comes_from_the_bytes_not_the_name() -> None:
    assert sniff_moving(encode_video("mov", frames=2)).name == "MOV"
    assert sniff_moving(encode_video("matroska", frames=2)).demuxer == "matroska"
    assert sniff_moving(animation("GIF", [100, 100])).pillow == "GIF"
