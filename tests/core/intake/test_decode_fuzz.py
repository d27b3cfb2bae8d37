"""Property tests: whatever bytes arrive, the decoder returns an RGB image or ImageRejected."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import ImagesConfig
from core.errors import ImageRejected
from core.intake.decode import WORKING_SIDE, DecodedImage, decode_image
from tests.core.intake import hostile

# Small limits keep every example fast even when a mutation inflates the header size.
CFG = replace(ImagesConfig(), max_pixels=2_000_000, max_side=4_096)
CODES = {"too_large", "empty", "not_image", "unsupported_format", "too_many_pixels",
         "bad_dimensions", "corrupt"}
SEEDS = hostile.seeds()
# Pillow warns (once per process) about damaged TIFF/EXIF data and, before our own check
# refuses them, about headers claiming more than its 89 Mpx alarm; the verdict is what counts.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:PIL.*"),
              pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes) -> None:
    """The property: a valid RGB DecodedImage or an ImageRejected with a known code."""
    try:
        decoded = decode_image(data, CFG)
    except ImageRejected as error:
        assert error.code in CODES, error.code
        return
    assert isinstance(decoded, DecodedImage)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (decoded.width, decoded.height)
    assert 0 < max(decoded.width, decoded.height) <= WORKING_SIDE
    assert len(decoded.sha256) == 64
    decoded.image.tobytes()  # the pixels are really there


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid seed image with overwritten bytes, a cut, an insertion or a header tweak."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "header", "splice"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "header" and len(data) > 8:
            # The first 64 bytes hold sizes, depths and offsets: the interesting part.
            spot = draw(st.integers(0, min(63, len(data) - 1)))
            data[spot] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif kind == "splice":
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            data[at:] = other[draw(st.integers(0, len(other) - 1)):]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_images_decode_or_are_rejected(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.one_of(
    st.binary(max_size=4096),
    # Right magic, random rest: the decoder's plugins see garbage.
    st.tuples(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM",
                               b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 "]),
              st.binary(max_size=2048)).map(lambda parts: parts[0] + parts[1]),
))
def test_random_bytes_decode_or_are_rejected(data: bytes) -> None:
    check(data)


def test_every_seed_is_a_valid_image() -> None:
    # The mutations start from images that decode, or the fuzzing proves little.
    for name, data in SEEDS.items():
        assert decode_image(data, CFG).image.mode == "RGB", name
