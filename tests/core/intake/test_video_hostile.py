"""Hostile moving pictures: each refused with its own code, nothing opened, memory bounded.

Playlists are checked against a real loopback HTTP server (its connections counted) and a
real file watched with inotify (which sees FFmpeg's own C-level opens); the control tests show
that the same files do reach both through a PyAV left at its defaults.
"""

from __future__ import annotations

import ctypes
import http.server
import io
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core.intake.video
from core.config import VideoConfig
from core.errors import VideoRejected
from core.i18n import describe_error, t
from core.intake.video import decode_clip
from core.intake.video_demux import open_guarded
from tests.core.intake.hostile import encode, photo
from tests.core.intake.video_fixtures import (
    animation,
    encode_video,
    ffconcat_list,
    hls_playlist,
    patch_mp4_sample_size,
    patch_mp4_ten_hours,
    patch_webm_duration,
    raw_gif,
    resolution_switch,
    zero_frame_video,
)

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = VideoConfig()


def refusal(data: bytes, settings: VideoConfig = SETTINGS) -> str:
    with pytest.raises(VideoRejected) as refused:
        decode_clip(data, settings)
    return refused.value.code


# --- truncated, mislabelled, empty -------------------------------------------------------

TRUNCATED = {
    "mp4 index first, cut at 60%": (lambda: encode_video("mp4", frames=60, faststart=True), 0.6),
    "mp4 index last, cut at 90%": (lambda: encode_video("mp4", frames=60), 0.9),
    "webm cut at 70%": (lambda: encode_video("webm", "libvpx-vp9", frames=60), 0.7),
    "webm cut in its header": (lambda: encode_video("webm", "libvpx-vp9", frames=60), 0.03),
    "gif cut mid-frame": (lambda: animation("GIF", [100] * 6, size=(64, 64)), 0.6),
    "apng cut": (lambda: animation("PNG", [100] * 6, size=(64, 64)), 0.6),
    "webp cut": (lambda: animation("WEBP", [100] * 6, size=(64, 64)), 0.6),
}


@pytest.mark.parametrize("case", sorted(TRUNCATED))
def test_truncated_files_are_refused_as_damaged(case: str) -> None:
    make, fraction = TRUNCATED[case]
    data = make()
    assert refusal(data[:int(len(data) * fraction)]) == "video_corrupt"


@pytest.mark.parametrize(("data", "code"), [
    (b"", "empty"),
    (b"This is a text file that someone named clip.mp4\n" * 20, "not_video"),
    (b"<!doctype html><html><body>video</body></html>", "not_video"),
    (b"RIFF\x00\x10\x00\x00AVI LIST", "unsupported_video"),
    (b"FLV\x01\x05\x00\x00\x00\x09", "unsupported_video"),
    (b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00avifmif1", "unsupported_video"),
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\xde\xad" * 200, "video_corrupt"),
])
def test_mislabelled_and_unknown_files_are_refused_before_ffmpeg(data: bytes, code: str) -> None:
    assert refusal(data) == code


def test_a_still_jpeg_is_not_a_clip() -> None:
    assert refusal(encode(photo(), "JPEG")) == "not_video"


def test_a_codec_outside_the_list_is_named() -> None:
    with pytest.raises(VideoRejected) as refused:
        decode_clip(encode_video("mp4", "mpeg4", frames=5), SETTINGS)
    assert refused.value.code == "unsupported_codec"
    assert refused.value.params["codec"] == "MPEG-4 Part 2"


def test_a_file_above_max_bytes_is_refused_unread() -> None:
    data = encode_video("mp4", frames=30)
    assert refusal(data, VideoConfig(max_bytes=len(data) - 1)) == "too_large"


@pytest.mark.parametrize("container", ["mp4", "webm"])
def test_a_file_without_video_frames_is_refused(container: str) -> None:
    assert refusal(zero_frame_video(container)) == "video_no_frames"


# --- sizes, lengths and counts: declared, and held ----------------------------------------

@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if a video frame is decoded (the refusal must come from the headers)."""
    def refuse(*args: object, **kwargs: object) -> Iterator[object]:
        raise AssertionError("a frame was decoded before the bounds were checked")
    monkeypatch.setattr(core.intake.video, "iter_video_frames", refuse)


def test_ten_hours_declared_by_a_webm_header_is_refused_before_decoding(no_decoding: None) -> None:
    data = patch_webm_duration(encode_video("webm", "libvpx-vp9", frames=30), 36_000)
    assert refusal(data) == "video_too_long"


def test_ten_hours_declared_by_an_mp4_is_refused_before_decoding(no_decoding: None) -> None:
    assert refusal(patch_mp4_ten_hours(encode_video("mp4", frames=30))) == "video_too_long"


def test_a_webm_that_declares_one_second_but_holds_thirty_is_cut_off(no_decoding: None) -> None:
    data = patch_webm_duration(encode_video("webm", "libvpx", frames=60, rate=2), 1.0)
    assert refusal(data) == "video_too_long"


def test_frames_past_max_frames_are_refused(no_decoding: None) -> None:
    assert refusal(encode_video("mp4", frames=30), VideoConfig(max_frames=20)) \
        == "video_too_many_frames"


def test_a_huge_h264_frame_is_refused_from_its_header(no_decoding: None) -> None:
    data = encode_video("mp4", frames=2, size=(4096, 4096), options={"preset": "ultrafast"})
    assert refusal(data) == "video_too_many_pixels"


def test_a_huge_h264_frame_behind_a_small_header_is_stopped_by_the_decoder() -> None:
    data = encode_video("mp4", frames=2, size=(4096, 4096), options={"preset": "ultrafast"})
    assert refusal(patch_mp4_sample_size(data, 64, 48)) == "video_too_many_pixels"


def test_frames_that_grow_past_the_declared_size_are_cut_off() -> None:
    data = resolution_switch(small=(64, 48), large=(640, 480))
    assert decode_clip(data, SETTINGS).timing.frame_count == 10  # fine under the defaults
    assert refusal(data, VideoConfig(max_pixels=10_000)) == "video_too_many_pixels"


@pytest.mark.parametrize(("name", "data", "code"), [
    ("logical screen 65535²", raw_gif((65_535, 65_535), [(0, 0, 1, 1)] * 2),
     "video_too_many_pixels"),
    ("a frame far outside a small screen", raw_gif((4, 4), [(0, 0, 1, 1), (60_000, 60_000, 1, 1)]),
     "video_too_many_pixels"),
    ("100,000 frames", raw_gif((1, 1), [(0, 0, 1, 1)] * 100_000), "video_too_many_frames"),
    ("zero-sized screen", raw_gif((0, 0), [(0, 0, 0, 0)] * 2), "video_bad_dimensions"),
])
def test_gif_bombs_are_refused_from_their_headers(name: str, data: bytes, code: str) -> None:
    assert refusal(data) == code


def _patch_webp_canvas(data: bytes, width: int, height: int) -> bytes:
    size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return data[:24] + size + data[30:]


def _patch_png_size(data: bytes, width: int, height: int) -> bytes:
    return data[:16] + struct.pack(">II", width, height) + data[24:]


def test_animated_webp_and_png_declaring_huge_canvases_are_refused() -> None:
    webp = _patch_webp_canvas(animation("WEBP", [100, 100]), 16_384, 16_384)
    apng = _patch_png_size(animation("PNG", [100, 100]), 30_000, 30_000)
    assert refusal(webp) == "video_too_many_pixels"
    assert refusal(apng) == "video_too_many_pixels"


def test_animations_longer_than_max_seconds_are_refused() -> None:
    assert refusal(animation("GIF", [15_000, 10_000])) == "video_too_long"


# --- playlists: nothing is opened, nothing is connected ------------------------------------

class CountingServer(http.server.ThreadingHTTPServer):
    """A loopback HTTP server that counts every connection made to it (and answers 404)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _NotFound)
        self.connections = 0
        self.port = self.server_address[1]

    def verify_request(self, request: object, client_address: object) -> bool:
        self.connections += 1
        return True


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[CountingServer]:
    counting = CountingServer()
    thread = threading.Thread(target=counting.serve_forever, daemon=True)
    thread.start()
    yield counting
    counting.shutdown()
    counting.server_close()


class OpenWatcher:
    """Every open of a file in `folder`, by any code of this process, seen by inotify."""

    IN_OPEN = 0x20

    def __init__(self, folder: Path) -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        assert libc.inotify_add_watch(self.fd, bytes(folder), self.IN_OPEN) >= 0

    def opened(self) -> list[str]:
        names = []
        try:
            events = os.read(self.fd, 65_536)
        except BlockingIOError:
            return names
        at = 0
        while at < len(events):
            _, _, _, length = struct.unpack_from("iIII", events, at)
            names.append(events[at + 16:at + 16 + length].rstrip(b"\0").decode())
            at += 16 + length
        return names

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def secret(tmp_path: Path) -> Iterator[tuple[Path, OpenWatcher]]:
    folder = tmp_path / "outside"
    folder.mkdir()
    path = folder / "secret.mp4"
    path.write_bytes(encode_video("mp4", frames=2))
    watcher = OpenWatcher(folder)
    yield path, watcher
    watcher.close()


PLAYLISTS = {"hls": hls_playlist, "concat": ffconcat_list}


@pytest.mark.parametrize("kind", sorted(PLAYLISTS))
def test_playlists_are_refused_without_opening_anything(
        kind: str, server: CountingServer, secret: tuple[Path, OpenWatcher]) -> None:
    path, watcher = secret
    data = PLAYLISTS[kind](server.port, path)
    with pytest.raises(VideoRejected) as refused:
        decode_clip(data, SETTINGS)
    assert refused.value.code == "unsupported_video"
    assert server.connections == 0 and watcher.opened() == []


@pytest.mark.parametrize(("kind", "options"), [("hls", {}), ("concat", {"safe": "0"})])
def test_even_a_playlist_demuxer_opens_nothing_through_the_guards(
        kind: str, options: dict[str, str], server: CountingServer,
        secret: tuple[Path, OpenWatcher]) -> None:
    """The second and third guards alone: had a playlist demuxer been chosen, no protocol
    opens a file or a connection."""
    path, watcher = secret
    data = PLAYLISTS[kind](server.port, path)
    try:
        with open_guarded(data, kind, SETTINGS) as container:
            for _ in container.demux():
                pass
    except (av.FFmpegError, OSError, ValueError):
        pass
    assert server.connections == 0 and watcher.opened() == []


@pytest.mark.parametrize(("kind", "options"), [("hls", {}), ("concat", {"safe": "0"})])
def test_control_unguarded_pyav_does_follow_these_playlists(
        kind: str, options: dict[str, str], server: CountingServer,
        secret: tuple[Path, OpenWatcher]) -> None:
    """The fixtures are live: PyAV at its defaults connects to the server or opens the file."""
    path, watcher = secret
    try:
        with av.open(io.BytesIO(PLAYLISTS[kind](server.port, path)), format=kind,
                     options=options, timeout=5.0) as container:
            for _ in container.demux():
                pass
    except (av.FFmpegError, OSError, ValueError):
        pass
    assert server.connections > 0 or path.name in watcher.opened()


# --- any damage: only VideoRejected, never a crash ----------------------------------------

GOOD = {"mp4": encode_video("mp4", frames=8, faststart=True),
        "webm": encode_video("webm", "libvpx-vp9", frames=8),
        "gif": animation("GIF", [50, 80, 120]),
        "webp": animation("WEBP", [50, 80, 120]),
        "apng": animation("PNG", [50, 80, 120])}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(GOOD)), at=st.floats(0.0, 1.0),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=8))
def test_damaged_bytes_give_a_clip_or_a_refusal(name: str, at: float,
                                                flips: list[tuple[float, int]]) -> None:
    data = bytearray(GOOD[name])
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    cut = bytes(data[:max(1, int(at * len(data)))])
    try:
        decode_clip(cut, SETTINGS)
    except VideoRejected:
        pass


# --- memory --------------------------------------------------------------------------------

_MEASURE = """
import resource, sys
from pathlib import Path
from core.config import VideoConfig
from core.errors import VideoRejected
from core.i18n import describe_error, t
from core.intake.video import decode_clip
for warm in sys.argv[2:]:
    decode_clip(Path(warm).read_bytes(), VideoConfig())
data = Path(sys.argv[1]).read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_clip(data, VideoConfig())
    outcome = "decoded"
except VideoRejected as exc:
    outcome = exc.code
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(outcome, grown // 1024)
"""


def _peak_growth_mb(tmp_path: Path, data: bytes) -> tuple[str, int]:
    """Decode `data` in a fresh process, after warming up both decoders; (outcome, MB)."""
    warm = [tmp_path / "warm.mp4", tmp_path / "warm.gif"]
    warm[0].write_bytes(encode_video("mp4", frames=4))
    warm[1].write_bytes(animation("GIF", [100, 100]))
    target = tmp_path / "target"
    target.write_bytes(data)
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(target), *map(str, warm)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, check=True)
    outcome, grown = done.stdout.split()
    return outcome, int(grown)


MEMORY_CASES = {
    "gif screen bomb": (lambda: raw_gif((65_535, 65_535), [(0, 0, 1, 1)] * 2),
                        "video_too_many_pixels"),
    "gif frame-count bomb": (lambda: raw_gif((1, 1), [(0, 0, 1, 1)] * 100_000),
                             "video_too_many_frames"),
    "4096² H.264 behind a 64×48 header": (
        lambda: patch_mp4_sample_size(encode_video("mp4", frames=2, size=(4096, 4096),
                                                   options={"preset": "ultrafast"}), 64, 48),
        "video_too_many_pixels"),
    "a 20 s 640×360 clip at 30 fps": (
        lambda: encode_video("mp4", frames=600, rate=30, size=(640, 360),
                             options={"preset": "ultrafast"}), "decoded"),
}


@pytest.mark.parametrize("case", sorted(MEMORY_CASES))
def test_memory_stays_bounded(case: str, tmp_path: Path) -> None:
    """Peak resident memory grows by less than 64 MB: the 20 s clip's 600 frames as RGB
    would be 414 MB, the GIF's screen 12.9 GB; one 4096² frame is 25 MB in 4:2:0."""
    make, expected = MEMORY_CASES[case]
    outcome, grown_mb = _peak_growth_mb(tmp_path, make())
    assert outcome == expected
    assert grown_mb < 64, f"{case}: peak resident memory grew by {grown_mb} MB"


# --- what the user reads -------------------------------------------------------------------

@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_refusal_reads_as_its_own_text(lang: str) -> None:
    refusals = [
        VideoRejected("x", code="not_video"),
        VideoRejected("x", code="unsupported_video", format="M3U/HLS playlist"),
        VideoRejected("x", code="unsupported_codec", codec="ProRes"),
        VideoRejected("x", code="video_too_long", max_seconds=20.0),
        VideoRejected("x", code="video_too_many_frames", max_frames=1200),
        VideoRejected("x", code="video_too_many_pixels"),
        VideoRejected("x", code="video_bad_dimensions", max_side=4096),
        VideoRejected("x", code="video_no_frames"),
        VideoRejected("x", code="video_corrupt"),
        VideoRejected("x", code="too_large", max_bytes=20_000_000),
    ]
    texts = [describe_error(refused, lang) for refused in refusals]
    assert t("error.failed", lang) not in texts
    assert len(set(texts)) == len(texts)
    assert "20" in texts[3] and "1200" in texts[4] and "ProRes" in texts[2]
    assert "4096" in texts[6]  # the bound a refused frame size broke
