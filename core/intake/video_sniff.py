"""Which moving-picture container a file is, judged by its magic bytes alone.

The answer picks the one parser allowed to read the bytes: FFmpeg's `mov` or `matroska`
demuxer for videos, Pillow's GIF, WebP or PNG plugin for animated pictures. Nothing else ever
parses them, so FFmpeg never probes its way into a playlist, concat or network demuxer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from core.errors import VideoRejected


@dataclass(frozen=True)
class MovingFormat:
    """An accepted container: `name` is what users call it; exactly one parser is set."""

    name: str
    demuxer: str | None = None  # FFmpeg demuxer (videos)
    pillow: str | None = None  # Pillow plugin (animated pictures)

    @property
    def kind(self) -> str:
        """"video" or "animation": what the request log calls the input."""
        return "video" if self.demuxer else "animation"


MP4 = MovingFormat("MP4", demuxer="mov")
MOV = MovingFormat("MOV", demuxer="mov")
WEBM = MovingFormat("WebM", demuxer="matroska")
MATROSKA = MovingFormat("Matroska", demuxer="matroska")
GIF = MovingFormat("GIF", pillow="GIF")
WEBP = MovingFormat("WebP", pillow="WEBP")
APNG = MovingFormat("APNG", pillow="PNG")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# ISO BMFF brands of still images and image sequences (HEIF/AVIF/CR3): not videos.
_IMAGE_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC",
                 b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"mif1": "HEIF",
                 b"msf1": "HEIF", b"crx ": "CR3", b"jp2 ": "JPEG 2000"}
# QuickTime files from before `ftyp`: their first box is one of these.
_QUICKTIME_BOXES = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
# (magic at offset 0, name) of containers we recognise and refuse.
_REFUSED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"FLV\x01", "FLV"),
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "WMV/ASF"),
    (b"OggS", "Ogg"),
    (b".RMF", "RealMedia"),
    (b"\x00\x00\x01\xba", "MPEG-PS"),
    (b"\x00\x00\x01\xb3", "MPEG video"),
    (b"YUV4MPEG2", "Y4M"),
    (b"\x1a\x45\xdf\xa3", "Matroska"),  # only reached when the EBML header is not complete
)
# Text formats that FFmpeg would follow to other files or addresses.
_PLAYLISTS: tuple[tuple[str, str], ...] = (
    ("#extm3u", "M3U/HLS playlist"),
    ("ffconcat", "FFmpeg concat list"),
    ("[playlist]", "PLS playlist"),
    ("<?xml", "XML"),
    ("<mpd", "DASH manifest"),
    ("v=0", "SDP"),
)


def sniff_moving(data: bytes) -> MovingFormat:
    """The container of an accepted moving picture; raises VideoRejected for anything else.

    A still PNG or WebP is "not a video" here; a GIF is accepted as a container (whether it has
    more than one frame is the decoder's to count).
    """
    if not data:
        raise VideoRejected("empty file", code="empty")
    found = _video(data) or _animation(data)
    if found is not None:
        return found
    refused = _refused_name(data)
    if refused:
        raise VideoRejected(f"{refused} is not a supported video format",
                            code="unsupported_video", format=refused)
    raise VideoRejected("not a video or an animated picture", code="not_video")


def is_moving_picture(data: bytes) -> bool:
    """True for a video container or an animated WebP/PNG, and for any GIF (the GIF decoder
    tells a still one apart); intake sends these to `decode_clip`, the rest to `decode_image`."""
    return (_video(data) or _animation(data)) is not None


def _video(data: bytes) -> MovingFormat | None:
    box = data[4:8]
    if box == b"ftyp":
        if data[8:12] in _IMAGE_BRANDS:  # the major brand
            return None
        end = min(len(data), _box_size(data))
        compatible = {data[i:i + 4] for i in range(16, end - 3, 4)}
        return MOV if data[8:12] == b"qt  " or b"qt  " in compatible else MP4
    if box in _QUICKTIME_BOXES and _box_size(data) >= 8:
        return MOV
    if data.startswith(b"\x1a\x45\xdf\xa3") and len(data) >= 32:
        head = data[:64]
        if b"\x42\x82" in head:  # the DocType element
            return WEBM if b"webm" in head else MATROSKA
    return None


def _animation(data: bytes) -> MovingFormat | None:
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8X" and len(data) > 20:
        return WEBP if data[20] & 0x02 else None  # the VP8X animation flag
    if data.startswith(_PNG_SIGNATURE) and _png_has_animation_control(data):
        return APNG
    return None


def _box_size(data: bytes) -> int:
    return struct.unpack(">I", data[:4])[0] if len(data) >= 4 else 0


def _png_has_animation_control(data: bytes) -> bool:
    """An `acTL` chunk before the first `IDAT`: the PNG is animated (APNG)."""
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"acTL":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        at += 12 + length
    return False


def _refused_name(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return _IMAGE_BRANDS.get(data[8:12], "MP4")
    if data[:4] == b"RIFF":
        return {b"AVI ": "AVI", b"WAVE": "WAV"}.get(data[8:12])
    for magic, name in _REFUSED_MAGIC:
        if data.startswith(magic):
            return name
    if len(data) > 188 and data[0] == 0x47 and data[188] == 0x47:
        return "MPEG-TS"
    text = data[:256].decode("utf-8", errors="ignore").removeprefix("\ufeff").lstrip().lower()
    for start, name in _PLAYLISTS:
        if text.startswith(start) or (start == "<mpd" and "<mpd" in text):
            return name
    return None
