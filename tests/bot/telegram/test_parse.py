"""Reading options and files out of Telegram messages (no network)."""

from __future__ import annotations

import pytest

from bot.telegram.parse import (
    WORDS_REF,
    ImageRef,
    check_file,
    command_words,
    words_ref,
)
from core.config import GenerationConfig
from core.errors import ImageRejected
from core.i18n import describe_error

GEN = GenerationConfig(seconds=5.0, max_seconds=10.0)


@pytest.mark.parametrize(("ref", "code"), [
    (ImageRef("photo", file_id="f", file_size=20_000_001), "too_large"),
    (ImageRef("document", file_id="f", file_size=10, mime_type="application/pdf",
              file_name="paper.pdf"), "unsupported_format"),
    (ImageRef("document", file_id="f", file_size=10, mime_type="audio/mpeg",
              file_name="song.mp3"), "unsupported_format"),
])
def test_files_refused_before_download(ref: ImageRef, code: str) -> None:
    with pytest.raises(ImageRejected) as info:
        check_file(ref, 20_000_000)
    assert info.value.code == code


@pytest.mark.parametrize("ref", [
    ImageRef("photo", file_id="f", file_size=20_000_000),
    ImageRef("document", file_id="f", mime_type="image/png", file_name="a.png"),
    ImageRef("document", file_id="f", mime_type="application/octet-stream"),
    ImageRef("document", file_id="f"),
])
def test_files_worth_downloading(ref: ImageRef) -> None:
    check_file(ref, 20_000_000)


def test_pdf_message_names_the_format() -> None:
    ref = ImageRef("document", file_id="f", mime_type="application/pdf", file_name="x.pdf")
    with pytest.raises(ImageRejected) as info:
        check_file(ref, 1000)
    assert describe_error(info.value, "en").startswith("PDF files aren't supported")


def test_command_words() -> None:
    assert command_words("/sonify@my_bot 8s https://a.b/c.png") == (
        "sonify", "my_bot", ["8s", "https://a.b/c.png"])
    assert command_words("/SONIFY") == ("sonify", None, [])
    assert command_words("hello /sonify") == (None, None, ["hello", "/sonify"])
    assert command_words(None) == (None, None, [])


def test_words_reference_round_trip() -> None:
    assert words_ref(f"Type a short description…\n\n{WORDS_REF} Ab3_x-9") == "Ab3_x-9"
    assert words_ref("Type a short description…") is None
    assert words_ref(None) is None
