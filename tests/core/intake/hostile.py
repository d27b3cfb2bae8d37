"""A corpus of hostile and awkward image files, generated in memory (nothing on disk)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable

import numpy as np
from PIL import Image

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """`image` saved as `fmt` into bytes."""
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 0,
            rows: Iterable[bytes] = ()) -> bytes:
    """A hand-made PNG; `rows` (filter byte included) are compressed as a stream."""
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for row in rows) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def bomb_png(side: int = 8_000) -> bytes:
    """An 8 KB 1-bit PNG of side×side zeros: 8000² = 64 Mpx, 64 MB in Pillow, 192 MB as RGB.

    That is over our default max_pixels (50 M) but under Pillow's own alarm (89 M), so only
    our check stands between it and the decoder.
    """
    row = b"\x00" * (1 + (side + 7) // 8)
    return raw_png(side, side, bit_depth=1, colour_type=0, rows=(row for _ in range(side)))


def huge_header_png(width: int, height: int) -> bytes:
    """A PNG whose header claims any size but whose data holds one byte."""
    return raw_png(width, height, rows=[b"\x00\x00"])


def _patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    at = data.index(b"\xff\xc0")  # baseline SOF0: marker, length(2), precision(1), h, w
    return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]


def huge_header_jpeg(width: int = 65_500, height: int = 65_500) -> bytes:
    """A small JPEG whose SOF0 header claims `width`×`height`."""
    return _patch_jpeg_size(encode(Image.new("RGB", (16, 16), RED), "JPEG"), width, height)


def huge_header_gif(width: int = 65_535, height: int = 65_535) -> bytes:
    """A small GIF whose logical screen claims `width`×`height`."""
    data = encode(Image.new("P", (4, 4), 0), "GIF")
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def photo(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A deterministic colourful RGB picture (gradients; compresses like a photo)."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.uint32)
    pixels = np.stack([(x * 255) // max(1, width - 1), (y * 255) // max(1, height - 1),
                       (x ^ y) & 255], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def truncated_jpeg() -> bytes:
    """A JPEG cut in the middle of its entropy-coded data."""
    data = encode(photo((128, 96)), "JPEG", quality=90)
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    """A PNG cut in the middle of its IDAT chunk."""
    data = encode(photo((128, 96)), "PNG")
    return data[: len(data) // 2]


def broken_crc_png() -> bytes:
    """A PNG whose IHDR checksum is wrong."""
    data = encode(photo(), "PNG")
    return data[:29] + b"\x00\x00\x00\x00" + data[33:]


def cmyk_jpeg() -> bytes:
    """A CMYK JPEG (Adobe marker) of pure red ink mix: C=0, M=255, Y=255, K=0."""
    return encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)


def png16(value: int = 0x8000) -> bytes:
    """A 16-bit greyscale PNG holding `value` everywhere (0x8000 is mid grey)."""
    return encode(Image.new("I;16", (8, 8), value), "PNG")


def palette_png_with_transparency() -> bytes:
    """A palette PNG: left half transparent (index 0, red), right half opaque blue (index 1)."""
    image = Image.new("P", (8, 4), 0)
    image.putpalette([*RED, *BLUE] + [0] * (254 * 3))
    image.paste(1, (4, 0, 8, 4))
    return encode(image, "PNG", transparency=0)


def _two_frames() -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), GREEN)]


def animated_gif() -> bytes:
    """A two-frame GIF: red, then green."""
    first, second = _two_frames()
    return encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def animated_webp() -> bytes:
    """A two-frame lossless WebP: red, then green."""
    first, second = _two_frames()
    return encode(first, "WEBP", save_all=True, append_images=[second], duration=100,
                  lossless=True)


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """A 40×20 JPEG, left half red and right half blue, tagged with an EXIF orientation.

    With orientation 6 (rotate 90° clockwise to view) the upright picture is 20×40 with red
    on top and blue below.
    """
    image = Image.new("RGB", (40, 20), RED)
    image.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif, quality=95)


def greyscale_alpha_png() -> bytes:
    """An LA PNG: black everywhere; left half fully transparent, right half opaque."""
    image = Image.new("LA", (8, 4), (0, 0))
    image.paste((0, 255), (4, 0, 8, 4))
    return encode(image, "PNG")


def half_transparent_red_png() -> bytes:
    """An RGBA PNG of red at 50 % alpha (over white it reads as pink)."""
    return encode(Image.new("RGBA", (4, 4), (255, 0, 0, 128)), "PNG")


def big_photo_png(size: tuple[int, int] = (2048, 1536)) -> bytes:
    """A plain big PNG, to show downscaling to the working size."""
    return encode(Image.new("RGB", size, (10, 200, 30)), "PNG", compress_level=1)



def wide_float_tiff(side: int = 7_000) -> bytes:
    """A deflate-compressed float TIFF (mode F) of side×side: 0.25 grey, a band at 3.0 (so
    the maximum sets the scale), a NaN square. 7000² is inside the pixel limit and holds
    196 MB as Pillow decodes it; the file itself is well under 1 MB."""
    image = Image.new("F", (side, side), 0.25)
    image.paste(3.0, (0, 0, side, side // 4))
    image.paste(float("nan"), (0, side // 2, side // 8, side // 2 + side // 8))
    return encode(image, "TIFF", compression="tiff_adobe_deflate")


def wide_png16(side: int = 7_000) -> bytes:
    """A 16-bit greyscale PNG of side×side (98 MB as Pillow decodes it): mid grey, a white
    band; a few hundred KB on disk."""
    image = Image.new("I;16", (side, side), 0x8000)
    image.paste(0xFFFF, (0, 0, side, side // 4))
    return encode(image, "PNG", compress_level=9)

SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
       b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<rect width="10" height="10" fill="red"/></svg>')
HTML = b"<!DOCTYPE html>\n<html><head><title>Not an image</title></head><body>hi</body></html>"
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 32
MOV = b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  " + b"\x00" * 32
WEBM = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm" + b"\x00" * 32
TEXT = b"just some words, certainly not a picture\n"


def seeds() -> dict[str, bytes]:
    """Small valid images in every accepted format (the fuzzer mutates these)."""
    picture = photo((24, 16))
    return {
        "JPEG": encode(picture, "JPEG", quality=80),
        "PNG": encode(picture, "PNG"),
        "WEBP": encode(picture, "WEBP", quality=80),
        "GIF": encode(picture.convert("P"), "GIF"),
        "BMP": encode(picture, "BMP"),
        "TIFF": encode(picture, "TIFF"),
        "TIFF_LZW": encode(picture, "TIFF", compression="tiff_lzw"),
        "PNG_PALETTE_ALPHA": palette_png_with_transparency(),
        "PNG_16BIT": png16(),
        "GIF_ANIMATED": animated_gif(),
        "WEBP_ANIMATED": animated_webp(),
        "JPEG_EXIF": exif_rotated_jpeg(),
    }
