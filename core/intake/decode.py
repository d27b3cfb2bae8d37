"""Safe image decoding: sniff the format from the bytes, refuse bombs, normalise to RGB.

Anything a stranger sends goes through `decode_image`. The only exception it lets out
for bad input is `ImageRejected`, whose `code` selects the localised reply text.
Links live in `core.intake.links`, downloads in `core.intake.fetch`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.config import ImagesConfig
from core.errors import ImageRejected

logger = logging.getLogger(__name__)

# Longest side of the working image: the models look at 224 px, so more only costs memory.
WORKING_SIDE = 1024
# Pillow format names we decode, in the order the user-facing texts list them.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_HUMAN_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF", "BMP": "BMP",
                "TIFF": "TIFF"}

# (offset, magic, Pillow format) for what we accept.
_ACCEPTED_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
)
# (offset, magic, human name) for formats we recognise and refuse.
_REFUSED_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF-", "PDF"),
    (0, b"%!PS", "PostScript"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"II+\x00", "BigTIFF"),
    (0, b"MM\x00+", "BigTIFF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "PSD"),
    (0, b"PK\x03\x04", "ZIP"),
    (0, b"\x1f\x8b", "GZIP"),
    (0, b"ID3", "MP3"),
    (0, b"OggS", "OGG"),
    (0, b"fLaC", "FLAC"),
    (0, b"FWS", "SWF"),
    (0, b"CWS", "SWF"),
)
_FTYP_BRANDS = {b"qt  ": "MOV", b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC",
                b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                b"mif1": "HEIF", b"msf1": "HEIF", b"crx ": "CR3"}
_RIFF_KINDS = {b"AVI ": "AVI", b"WAVE": "WAV"}
# Greyscale deeper than 8 bits: scaled down to 'L' band by band (see `_to_8bit`).
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
# Modes Pillow resamples as they are: shrunk to the working size before any conversion.
_SHRINK_FIRST = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
# Pixels in one band of `_to_8bit` (1 MB as float32).
_BAND_PIXELS = 1 << 18
# EXIF orientation tag value -> the transpose that shows the picture upright.
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class DecodedImage:
    """A validated picture: RGB, EXIF-oriented, at most WORKING_SIDE px on its longest side."""

    image: Image.Image
    sha256: str
    format: str
    width: int
    height: int
    original_size: tuple[int, int] = (0, 0)
    # A video or an animation: `image` is its middle captioned frame (a preview), `sha256`
    # the hash of the file's bytes, and the answer is this clip with its new sound. A
    # `core.intake.moving.MovingPicture` (typed loosely: that module imports this one);
    # read it with `moving_of`, or `JobRequest.video`.
    moving: object | None = None

    def to_png_bytes(self) -> bytes:
        """The working image as a PNG (for spooling to disk or showing back to the user)."""
        out = io.BytesIO()
        self.image.save(out, "PNG", compress_level=3)
        return out.getvalue()


def sniff_format(data: bytes) -> str:
    """The Pillow format name of an accepted image, judged by its magic bytes alone."""
    if not data:
        raise ImageRejected("empty file", code="empty")
    for offset, magic, fmt in _ACCEPTED_MAGIC:
        if data.startswith(magic, offset):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    name = _refused_name(data)
    if name:
        raise ImageRejected(f"{name} is not a supported image format",
                            code="unsupported_format", format=name)
    raise ImageRejected("not an image", code="not_image")


def _refused_name(data: bytes) -> str | None:
    for offset, magic, name in _REFUSED_MAGIC:
        if data.startswith(magic, offset):
            return name
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12], "MP4")
    if data[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "MOV"
    if data[:4] == b"RIFF":
        return _RIFF_KINDS.get(data[8:12])
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM" if b"webm" in data[:64] else "MKV"
    return _markup_name(data[:2048])


def _markup_name(head: bytes) -> str | None:
    """SVG, HTML or XML when the start of the body is markup text."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", errors="ignore")
    else:
        text = head.decode("utf-8", errors="ignore").removeprefix("\ufeff")
    text = text.lstrip().lower()
    if not text.startswith("<"):
        return None
    if "<svg" in text:
        return "SVG"
    if text.startswith(("<!doctype html", "<html", "<head", "<body", "<meta", "<title",
                        "<script", "<div", "<p>", "<a ", "<!--")) or "<html" in text:
        return "HTML"
    if text.startswith("<?xml"):
        return "XML"
    return None


def decode_image(data: bytes, settings: ImagesConfig) -> DecodedImage:
    """Validate and decode untrusted bytes; raises ImageRejected for anything unusable."""
    if len(data) > settings.max_bytes:
        raise ImageRejected("file too large", code="too_large", max_bytes=settings.max_bytes)
    fmt = sniff_format(data)
    try:
        return _decode(data, fmt, settings)
    except ImageRejected:
        raise
    except Image.DecompressionBombError:
        raise ImageRejected("too many pixels", code="too_many_pixels",
                            **_limits(settings)) from None
    except MemoryError:
        raise ImageRejected("too many pixels", code="too_many_pixels",
                            **_limits(settings)) from None
    except Exception as exc:  # Pillow raises many types for damaged files; all mean "corrupt".
        logger.debug("%s decode failed: %s", fmt, type(exc).__name__)
        raise ImageRejected("damaged or incomplete image", code="corrupt") from None


async def decode_image_async(data: bytes, settings: ImagesConfig) -> DecodedImage:
    """`decode_image` in a worker thread, so the event loop keeps serving chats."""
    return await asyncio.to_thread(decode_image, data, settings)


def _decode(data: bytes, fmt: str, settings: ImagesConfig) -> DecodedImage:
    # Only the sniffed format's plugin may parse the bytes; Image.open reads the header only.
    try:
        opened = Image.open(io.BytesIO(data), formats=[fmt])
    except UnidentifiedImageError:
        # Pillow refuses zero-sized images outright; say so when the header shows it.
        size = _declared_size(data, fmt)
        if size is not None and min(size) <= 0:
            raise ImageRejected("zero-sized image", code="bad_dimensions",
                                **_limits(settings)) from None
        raise
    with opened:
        original = opened.size
        # Our limit comes from the config and is checked before any pixel is decoded.
        # Pillow's global MAX_IMAGE_PIXELS stays as the host process set it (a second,
        # looser net: its DecompressionBombError maps to too_many_pixels as well).
        _check_size(original, settings)
        if fmt == "JPEG":
            # libjpeg can decode at 1/2, 1/4 or 1/8 scale: far less memory for big photos.
            opened.draft(None, _fit(original, WORKING_SIDE))
        opened.load()
        orientation = _orientation(opened)
    image: Image.Image = opened
    del opened  # from here `image` is the only reference: rebinding it frees the picture
    if image.mode in _WIDE_MODES:
        image = _to_8bit(image)
    # Shrink before widening (grey to RGB, CMYK to RGB): the full-size copy is then the
    # narrow one, and the widened one is the working size.
    if image.mode in _SHRINK_FIRST and max(image.size) > WORKING_SIDE:
        image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    image = _to_rgb_or_rgba(image)
    if max(image.size) > WORKING_SIDE:
        image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    image = _flatten(image)
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return DecodedImage(image=image, sha256=digest.hexdigest(), format=fmt, width=image.width,
                        height=image.height, original_size=original)


def _limits(settings: ImagesConfig) -> dict[str, int]:
    """The bounds a size refusal names in its text."""
    return {"max_pixels": settings.max_pixels, "max_side": settings.max_side}


def _check_size(size: tuple[int, int], settings: ImagesConfig) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageRejected("zero-sized image", code="bad_dimensions", **_limits(settings))
    if width * height > settings.max_pixels:
        raise ImageRejected("too many pixels", code="too_many_pixels", **_limits(settings))
    if width > settings.max_side or height > settings.max_side:
        raise ImageRejected("image side too long", code="bad_dimensions", **_limits(settings))


def _declared_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height from fixed-position headers (PNG, BMP) of files Pillow refused."""
    try:
        if fmt == "PNG" and data[12:16] == b"IHDR":
            return struct.unpack(">ii", data[16:24])
        if fmt == "BMP":
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 header: 16-bit sizes
                return struct.unpack("<HH", data[18:22])
            width, height = struct.unpack("<ii", data[18:26])
            return width, abs(height)  # a negative height means top-down rows
    except struct.error:
        return None
    return None


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    """The size `thumbnail` would give: longest side `side`, aspect ratio kept."""
    width, height = size
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    """RGB, or RGBA when the picture carries transparency (composited later, once small)."""
    mode = image.mode
    if mode == "La":  # premultiplied; Pillow only unpremultiplies it to LA
        image, mode = image.convert("LA"), "LA"
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        return image.convert("RGBA")
    if mode == "P":
        palette = image.palette
        has_alpha = "transparency" in image.info or (palette is not None and palette.mode == "RGBA")
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode == "RGB":
        return image
    if mode in ("L", "1", "CMYK", "YCbCr", "RGBX"):
        return image.convert("RGB")
    raise ImageRejected(f"unsupported colour mode {mode}", code="unsupported_format",
                        format=f"{_HUMAN_NAMES.get(image.format or '', 'This')} ({mode})")


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer or float greyscale to 8-bit 'L', one band of rows at a time.

    Only the 8-bit result (1 byte a pixel) is whole-image sized; every temporary is one band
    of `_BAND_PIXELS`, so a 7000×7000 float picture costs its own 4 bytes a pixel plus 1, not
    several float64 copies (8 bytes a pixel each).
    """
    width, height = image.size
    rows = max(1, _BAND_PIXELS // width)
    bands = [(top, min(height, top + rows)) for top in range(0, height, rows)]
    if image.mode == "F":
        # Floats: 0..1 is the usual range; anything brighter is scaled by its finite maximum.
        peak = 0.0
        for top, bottom in bands:
            band = np.asarray(image.crop((0, top, width, bottom)))
            peak = max(peak, float(band.max(initial=0.0, where=np.isfinite(band))))
        scale = 255.0 if peak <= 1.0 else 255.0 / peak
    else:
        # I;16 variants and the 'I' mode Pillow uses for 16-bit TIFF/PNG hold 0..65535.
        scale = 1.0 / 257.0
    out = np.empty((height, width), dtype=np.uint8)
    for top, bottom in bands:
        values = np.asarray(image.crop((0, top, width, bottom))).astype(np.float32)
        values *= np.float32(scale)
        np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.rint(values, out=values)
        np.clip(values, 0.0, 255.0, out=values)
        out[top:bottom] = values  # float32 in 0..255 to uint8: exact, whole numbers
    return Image.fromarray(out)


def _flatten(image: Image.Image) -> Image.Image:
    """Composite transparency on white: captioners expect an opaque picture."""
    if image.mode == "RGB":
        return image
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright); a damaged EXIF block counts as upright."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # A broken EXIF block should not cost the user a good picture.
        return 1
    return value if isinstance(value, int) else 1
