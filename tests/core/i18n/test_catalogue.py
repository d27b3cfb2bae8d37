"""The message catalogue: complete in every language, errors mapped to plain words."""

from __future__ import annotations

import string

import pytest

from core.errors import ImageRejected, QueueFull, RateLimited, UserFacingError
from core.i18n import CATALOGUE, describe_error, format_wait, pick_language, t


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("lang", sorted(CATALOGUE))
def test_every_language_has_every_key_with_same_placeholders(lang: str) -> None:
    english = CATALOGUE["en"]
    assert set(CATALOGUE[lang]) == set(english)
    for key, text in CATALOGUE[lang].items():
        assert placeholders(text) == placeholders(english[key]), key


@pytest.mark.parametrize(("code", "expected"), [
    (None, "en"), ("es", "es"), ("es-ES", "es"), ("es_419", "es"), ("en-US", "en"),
    ("pt-BR", "en"), ("", "en"),
])
def test_pick_language(code: str | None, expected: str) -> None:
    assert pick_language(code) == expected


def test_errors_in_both_languages() -> None:
    busy = QueueFull("queue full", retry_after_s=40)
    assert describe_error(busy, "en") == "I'm very busy right now. Please try again in about 40 s."
    assert "Inténtalo de nuevo en unos 40 s" in describe_error(busy, "es")
    limit = RateLimited("limit", code="hourly_limit", retry_after_s=600)
    assert describe_error(limit, "en").endswith("Try again in 10 min.")
    big = ImageRejected("too big", code="too_large", max_bytes=20_000_000)
    assert "20 MB" in describe_error(big, "en")
    svg = ImageRejected("svg", code="unsupported_format", format="SVG")
    assert describe_error(svg, "es").startswith("Los archivos SVG no son compatibles")


def test_unknown_errors_never_leak_details() -> None:
    secret = RuntimeError("Traceback: token=123:abc at /srv/x.py line 3")
    assert describe_error(secret, "en") == t("error.failed", "en")
    odd = UserFacingError("internal detail", code="no_such_code")
    assert describe_error(odd, "es") == t("error.failed", "es")
    missing_param = UserFacingError("x", code="busy")  # no retry_after_s
    assert describe_error(missing_param) == t("error.failed")


def test_format_wait() -> None:
    assert format_wait(0.2) == "1 s"
    assert format_wait(89) == "89 s"
    assert format_wait(91) == "2 min"
