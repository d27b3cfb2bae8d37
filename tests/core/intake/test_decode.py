"""Decoding untrusted image bytes: formats, hostile files, colour handling, limits, memory."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from core.config import ImagesConfig
from core.errors import ImageRejected
from core.i18n import describe_error
from core.intake.decode import DecodedImage, decode_image, decode_image_async
from tests.core.intake import hostile
from tests.core.intake.hostile import BLACK, BLUE, RED, WHITE

CFG = ImagesConfig()
ROOT = Path(__file__).resolve().parents[3]


def close_to(pixel: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def reject_code(data: bytes, cfg: ImagesConfig = CFG) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, cfg)
    return info.value


@pytest.mark.parametrize("name", sorted(hostile.seeds()))
def test_every_accepted_format_decodes_to_rgb(name: str) -> None:
    decoded = decode_image(hostile.seeds()[name], CFG)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == decoded.image.size
    assert decoded.format == name.split("_")[0]


def test_pixels_survive_a_lossless_round_trip() -> None:
    picture = hostile.photo((24, 16))
    decoded = decode_image(hostile.encode(picture, "PNG"), CFG)
    assert decoded.image.tobytes() == picture.tobytes()
    assert decoded.original_size == (24, 16)


# name -> (bytes factory, expected code) for files that must be refused.
REFUSED: dict[str, tuple[Callable[[], bytes], str]] = {
    "decompression bomb PNG (64 Mpx)": (hostile.bomb_png, "too_many_pixels"),
    "decompression bomb PNG (256 Mpx)": (lambda: hostile.bomb_png(16_000), "too_many_pixels"),
    "PNG header 20000x20000": (lambda: hostile.huge_header_png(20_000, 20_000),
                               "too_many_pixels"),
    "PNG header 100000x1": (lambda: hostile.huge_header_png(100_000, 1), "bad_dimensions"),
    "PNG header 0x5": (lambda: hostile.huge_header_png(0, 5), "bad_dimensions"),
    "JPEG header 65500x65500": (hostile.huge_header_jpeg, "too_many_pixels"),
    "GIF screen 65535x65535": (hostile.huge_header_gif, "too_many_pixels"),
    "truncated JPEG": (hostile.truncated_jpeg, "corrupt"),
    "truncated PNG": (hostile.truncated_png, "corrupt"),
    "JPEG magic then garbage": (lambda: b"\xff\xd8\xff\xe0" + b"\x13" * 500, "corrupt"),
    "PNG with a broken CRC": (hostile.broken_crc_png, "corrupt"),
    "empty body": (lambda: b"", "empty"),
    "plain text": (lambda: hostile.TEXT, "not_image"),
    "random bytes": (lambda: bytes(range(7, 250)) * 3, "not_image"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hostile_files_are_refused_with_the_right_code(name: str) -> None:
    factory, code = REFUSED[name]
    assert reject_code(factory()).code == code


@pytest.mark.parametrize(("data", "human"), [
    (hostile.SVG, "SVG"), (b"\xef\xbb\xbf  \n" + hostile.SVG, "SVG"),
    (hostile.HTML, "HTML"), (b"\n\n  <html><body>x</body></html>", "HTML"),
    (hostile.PDF, "PDF"), (hostile.MP4, "MP4"), (hostile.MOV, "MOV"), (hostile.WEBM, "WebM"),
])
def test_recognised_non_images_name_their_format(data: bytes, human: str) -> None:
    error = reject_code(data)
    assert (error.code, error.params["format"]) == ("unsupported_format", human)
    text = describe_error(error, "en")
    assert human in text and "JPEG, PNG, WebP, GIF, BMP or TIFF" in text
    assert human in describe_error(error, "es")


def test_format_comes_from_the_bytes_not_the_name() -> None:
    # The PNG magic wins even though the data would be "image/jpeg" by name elsewhere.
    assert decode_image(hostile.seeds()["PNG"], CFG).format == "PNG"
    assert reject_code(b"GIF89a" + hostile.HTML).code == "corrupt"


def test_cmyk_jpeg_becomes_rgb_red() -> None:
    decoded = decode_image(hostile.cmyk_jpeg(), CFG)
    assert decoded.image.mode == "RGB"
    assert close_to(decoded.image.getpixel((16, 16)), RED)


def test_16_bit_png_is_scaled_not_clipped() -> None:
    assert decode_image(hostile.png16(0x8000), CFG).image.getpixel((0, 0)) == (128, 128, 128)
    assert decode_image(hostile.png16(0xFFFF), CFG).image.getpixel((0, 0)) == WHITE
    assert decode_image(hostile.png16(0x0100), CFG).image.getpixel((0, 0)) == (1, 1, 1)


def test_32_bit_and_float_tiffs_become_8_bit_grey() -> None:
    as_int = hostile.encode(Image.new("I", (4, 4), 40_000), "TIFF")
    as_float = hostile.encode(Image.new("F", (4, 4), 0.5), "TIFF")
    assert decode_image(as_int, CFG).image.getpixel((0, 0)) == (156, 156, 156)
    assert decode_image(as_float, CFG).image.getpixel((0, 0)) == (128, 128, 128)


def test_palette_transparency_is_composited_on_white() -> None:
    image = decode_image(hostile.palette_png_with_transparency(), CFG).image
    assert image.getpixel((1, 1)) == WHITE  # transparent red index
    assert image.getpixel((6, 1)) == BLUE


def test_greyscale_alpha_is_composited_on_white() -> None:
    image = decode_image(hostile.greyscale_alpha_png(), CFG).image
    assert (image.getpixel((1, 1)), image.getpixel((6, 1))) == (WHITE, BLACK)


def test_half_transparent_red_reads_as_pink() -> None:
    assert close_to(decode_image(hostile.half_transparent_red_png(), CFG).image.getpixel((0, 0)),
                    (255, 127, 127), tolerance=1)


@pytest.mark.parametrize("factory", [hostile.animated_gif, hostile.animated_webp])
def test_animations_give_their_first_frame(factory: Callable[[], bytes]) -> None:
    image = decode_image(factory(), CFG).image
    assert image.size == (16, 16) and image.getpixel((8, 8)) == RED


def test_exif_orientation_is_applied() -> None:
    decoded = decode_image(hostile.exif_rotated_jpeg(6), CFG)
    assert decoded.image.size == (20, 40) and decoded.original_size == (40, 20)
    assert close_to(decoded.image.getpixel((10, 5)), RED)
    assert close_to(decoded.image.getpixel((10, 35)), BLUE)


def test_one_bit_and_lab_modes() -> None:
    bilevel = Image.new("1", (8, 8), 0)
    bilevel.paste(1, (4, 0, 8, 8))
    image = decode_image(hostile.encode(bilevel, "PNG"), CFG).image
    assert (image.getpixel((0, 0)), image.getpixel((7, 0))) == (BLACK, WHITE)
    error = reject_code(hostile.encode(Image.new("LAB", (4, 4), (50, 0, 0)), "TIFF"))
    assert (error.code, error.params["format"]) == ("unsupported_format", "TIFF (LAB)")


def test_big_images_are_downscaled_to_the_working_size() -> None:
    decoded = decode_image(hostile.big_photo_png((2048, 1536)), CFG)
    assert decoded.image.size == (1024, 768) and decoded.original_size == (2048, 1536)
    assert decoded.image.getpixel((500, 500)) == (10, 200, 30)
    # JPEG takes the reduced-scale decoding path (draft) before the final resize.
    big_jpeg = hostile.encode(Image.new("RGB", (3000, 2000), (10, 200, 30)), "JPEG")
    jpeg = decode_image(big_jpeg, CFG)
    assert jpeg.image.size == (1024, 683) and jpeg.original_size == (3000, 2000)
    assert close_to(jpeg.image.getpixel((500, 300)), (10, 200, 30))


def test_limits_follow_the_config() -> None:
    picture = hostile.encode(Image.new("RGB", (300, 200), RED), "PNG")
    assert reject_code(picture, replace(CFG, max_pixels=50_000)).code == "too_many_pixels"
    assert reject_code(picture, replace(CFG, max_side=256)).code == "bad_dimensions"
    error = reject_code(picture, replace(CFG, max_bytes=len(picture) - 1))
    assert (error.code, error.params["max_bytes"]) == ("too_large", len(picture) - 1)
    assert "MB" in describe_error(error, "en")
    assert decode_image(picture, replace(CFG, max_pixels=60_000, max_side=300)).width == 300


def test_refusals_name_the_limit_they_apply() -> None:
    """A refused size says the bound it broke, in each language of the catalogue."""
    picture = hostile.encode(Image.new("RGB", (300, 200), RED), "PNG")
    pixels = reject_code(picture, replace(CFG, max_pixels=50_000))
    assert describe_error(pixels, "en") == ("That image has too many pixels to process safely "
                                            "— the limit is 0.1 megapixels.")
    assert "0.1 megapíxeles" in describe_error(pixels, "es")
    side = reject_code(picture, replace(CFG, max_side=256))
    assert describe_error(side, "en") == ("That image's size is not usable: each side must be "
                                          "between 1 and 256 pixels.")
    assert "entre 1 y 256 píxeles" in describe_error(side, "es")
    flat = reject_code(hostile.huge_header_png(0, 5), CFG)
    assert f"between 1 and {CFG.max_side} pixels" in describe_error(flat, "en")
    bomb = reject_code(hostile.bomb_png(), CFG)
    assert f"the limit is {CFG.max_pixels / 1e6:g} megapixels" in describe_error(bomb, "en")


def test_pillow_global_limits_are_left_alone() -> None:
    before = (Image.MAX_IMAGE_PIXELS, getattr(Image, "LOAD_TRUNCATED_IMAGES", None))
    for data in (hostile.bomb_png(2_000), hostile.truncated_jpeg(), hostile.seeds()["PNG"]):
        try:
            decode_image(data, replace(CFG, max_pixels=1_000_000))
        except ImageRejected:
            pass
    assert (Image.MAX_IMAGE_PIXELS, getattr(Image, "LOAD_TRUNCATED_IMAGES", None)) == before


def test_hash_covers_mode_size_and_pixels() -> None:
    decoded = decode_image(hostile.seeds()["PNG"], CFG)
    image = decoded.image
    expected = hashlib.sha256(f"RGB:{image.width}x{image.height}:".encode() + image.tobytes())
    assert decoded.sha256 == expected.hexdigest()
    # The same picture in another container hashes the same; one changed pixel does not.
    assert decode_image(hostile.seeds()["BMP"], CFG).sha256 == decoded.sha256
    changed = image.copy()
    changed.putpixel((0, 0), (1, 2, 3))
    assert decode_image(hostile.encode(changed, "PNG"), CFG).sha256 != decoded.sha256


def test_png_bytes_round_trip() -> None:
    decoded = decode_image(hostile.seeds()["JPEG"], CFG)
    again = Image.open(io.BytesIO(decoded.to_png_bytes()))
    assert again.format == "PNG" and again.tobytes() == decoded.image.tobytes()


async def test_async_decode_runs_off_the_loop() -> None:
    decoded = await decode_image_async(hostile.seeds()["WEBP"], CFG)
    assert isinstance(decoded, DecodedImage) and decoded.image.mode == "RGB"
    with pytest.raises(ImageRejected):
        await decode_image_async(hostile.SVG, CFG)


def test_bad_input_prints_nothing(capfd: pytest.CaptureFixture[str],
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for factory, _code in REFUSED.values():
        with pytest.raises(ImageRejected):
            decode_image(factory(), CFG)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert not caplog.records


_MEASURE = """
import json, resource, sys, time, tracemalloc
from core.config import ImagesConfig
from core.errors import ImageRejected
from core.intake.decode import decode_image

data = open(sys.argv[1], "rb").read()

def rss():
    # VmHWM is this process's peak RSS since exec; ru_maxrss would include the parent's
    # peak at fork time, hiding any growth below it.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

before = rss()
tracemalloc.start()
started = time.perf_counter()
cpu_started = time.process_time()  # this process's CPU time: what other processes do adds nothing
try:
    decode_image(data, ImagesConfig())
    code = None
except ImageRejected as exc:
    code = exc.code
cpu_seconds = time.process_time() - cpu_started
seconds = time.perf_counter() - started
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
after = rss()
probe = b"\x01" * (64 * 2**20)  # written, so resident: proves the peak gauge moves here
probe_delta = rss() - after
print(json.dumps({"code": code, "rss_delta": after - before, "traced_peak": peak,
                  "seconds": seconds, "cpu_seconds": cpu_seconds, "probe_delta": probe_delta,
                  "size": len(data)}))
"""


def test_bomb_is_refused_before_decoding_with_little_memory(tmp_path: Path) -> None:
    """Refused from the header: the memory figures prove nothing was decoded (no 64 MB picture
    in RSS or tracemalloc, with a probe that shows the gauge would see one), and the refusal
    is cheap. Cheap in CPU time of the measuring process, not wall-clock time, which the other
    processes on a busy machine stretch: the refusal took about 10 ms of it (2-core machine)."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(hostile.bomb_png())  # 64 Mpx: ≥ 64 MB (192 MB as RGB) if decoded
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(bomb)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    figures = json.loads(done.stdout)
    print("bomb rejection:", figures)
    assert figures["code"] == "too_many_pixels"
    assert figures["probe_delta"] > 48 * 2**20  # the gauge sees a 64 MB allocation
    assert figures["rss_delta"] < 50 * 2**20
    assert figures["traced_peak"] < 50 * 2**20
    assert figures["cpu_seconds"] < 0.5


WIDE_SIDE = 7_000  # 49 Mpx: inside the default pixel limit (50 M)


@pytest.mark.parametrize(("name", "make"), [("float TIFF", hostile.wide_float_tiff),
                                            ("16-bit PNG", hostile.wide_png16)])
def test_wide_pictures_decode_in_bounded_memory(name: str, make: Callable[[int], bytes],
                                                tmp_path: Path) -> None:
    """Scaling to 8 bits works band by band: no whole-picture float64 copies (issue 13)."""
    picture = tmp_path / "wide.bin"
    picture.write_bytes(make(WIDE_SIDE))
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(picture)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(done.stdout)
    bound = 4 * WIDE_SIDE * WIDE_SIDE + 100_000_000
    print(f"{name} {WIDE_SIDE}x{WIDE_SIDE} ({figures['size'] / 1000:.0f} KB): peak RSS growth "
          f"{figures['rss_delta'] / 1e6:.0f} MB (bound {bound / 1e6:.0f} MB), "
          f"{figures['seconds']:.2f} s")
    assert figures["code"] is None
    assert figures["rss_delta"] < bound


def test_band_by_band_scaling_matches_the_whole_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands of a few rows give exactly what one pass over the whole picture gives."""
    import numpy as np

    from core.intake import decode

    rng = np.random.default_rng(7)
    values = rng.uniform(-1.0, 6.0, size=(37, 101)).astype(np.float32)
    values[3, 5], values[30, 90], values[36, 0] = np.nan, np.inf, -np.inf
    ints = rng.integers(0, 65_536, size=(37, 101)).astype(np.uint16)
    monkeypatch.setattr(decode, "_BAND_PIXELS", 250)  # 2 rows a band, the last one short
    for image, expected in (
        (Image.fromarray(values), np.rint(np.clip(np.nan_to_num(
            values.astype(np.float64) * 255.0 / values[np.isfinite(values)].max(),
            nan=0.0, posinf=0.0, neginf=0.0), 0, 255))),
        (Image.fromarray(ints), np.rint(ints.astype(np.float64) / 257.0)),
    ):
        got = np.asarray(decode._to_8bit(image))
        assert got.dtype == np.uint8 and got.shape == (37, 101)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # float32 rounding
        assert (got == expected).mean() > 0.99
