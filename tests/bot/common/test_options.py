"""Options as users type them on any platform: words, form fields, JSON numbers."""

from __future__ import annotations

import pytest

from bot.common.options import options_from_words, requested_options
from core.config import GenerationConfig
from core.errors import BadRequest
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
    asked = options_from_words(words, GEN)
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
        options_from_words(words, GEN)
    assert info.value.code == code
    assert "failed" not in describe_error(info.value, "es")  # a specific message exists


def test_free_text_ignores_unknown_keys_but_not_bad_values() -> None:
    assert options_from_words(["a=b", "https://x.org/?q=1"], GEN, strict=False).seed is None
    with pytest.raises(BadRequest):
        options_from_words(["seed=x"], GEN, strict=False)


@pytest.mark.parametrize(("seconds", "seed"), [
    (10**400, None), ("1" * 400, None), (float("nan"), None), (float("inf"), None),
    (True, None), ("nan", None), ("-3", None), ([5], None),
    (None, 10**400), (None, "9" * 400), (None, 1.5), (None, False), (None, {"a": 1}),
])
def test_hostile_values_are_refused_with_a_code(seconds: object, seed: object) -> None:
    """Huge numbers, NaN, booleans and containers are refused, never an overflow or a crash."""
    with pytest.raises(BadRequest) as info:
        requested_options(GEN, seconds=seconds, seed=seed)
    assert info.value.code in ("bad_seconds", "bad_seed")
    assert "failed" not in describe_error(info.value, "en")


def test_numbers_and_their_text_are_the_same_request() -> None:
    assert requested_options(GEN, seconds="7.5", seed="42") == \
        requested_options(GEN, seconds=7.5, seed=42)
    assert requested_options(GEN, seconds=" ", seed="").seed is None
