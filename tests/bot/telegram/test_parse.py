"""Reading options and files out of Telegram messages (no network)."""

from __future__ import annotations

import pytest

from bot.telegram.parse import (
    WORDS_REF,
    ImageRef,
    check_file,
    command_words,
    parse_options,
    words_ref,
)
from core.config import GenerationConfig
from core.errors import BadRequest, ImageRejected
from core.i18n import describe_error

GEN = GenerationConfig(seconds=5.0, max_seconds=10.0)


@pytest.mark.parametrize(("words", "seconds", "seed"), [
    ([], 5.0, None),
    (["8s", "seed=42", "https://example.org/a.png"], 8.0, 42),
    (["2.5s"], 2.5, None),
    (["2,5s"], 2.5, None),
    (["seconds=3"], 3.0, None),
    (["len=4s"], 4.0, None),
    (["semilla=7", "6seg"], 6.0, 7),
    (["please", "listen", "8", "seed=0"], 5.0, 0),
])
def test_options(words: list[str], seconds: float, seed: int | None) -> None:
    asked = parse_options(words, GEN)
    assert (asked.options.seconds, asked.seed) == (seconds, seed)


@pytest.mark.parametrize(("words", "code"), [
    (["11s"], "bad_seconds"),
    (["0.1s"], "bad_seconds"),
    (["seconds=abc"], "bad_seconds"),
    (["seed=-1"], "bad_seed"),
    (["seed=2147483648"], "bad_seed"),
    (["seed=1.5"], "bad_seed"),
    (["steps=500"], "bad_option"),  # not a user option: steps cost GPU time
])
def test_bad_options(words: list[str], code: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_options(words, GEN)
    assert info.value.code == code
    assert "failed" not in describe_error(info.value, "es")  # a specific message exists


def test_free_text_ignores_unknown_keys_but_not_bad_values() -> None:
    assert parse_options(["a=b", "https://x.org/?q=1"], GEN, strict=False).seed is None
    with pytest.raises(BadRequest):
        parse_options(["seed=x"], GEN, strict=False)


@pytest.mark.parametrize(("ref", "code"), [
    (ImageRef("photo", file_id="f", file_size=20_000_001), "too_large"),
    (ImageRef("document", file_id="f", file_size=10, mime_type="application/pdf",
              file_name="paper.pdf"), "unsupported_format"),
    (ImageRef("document", file_id="f", file_size=10, mime_type="video/mp4"),
     "unsupported_format"),
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
