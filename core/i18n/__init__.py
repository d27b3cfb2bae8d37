"""Every text a user reads — chat replies, statistics, the web page — in every language.

One module per language (`en`, `es`) holds a dictionary with the same keys; adding a
language is adding one module and one entry in `CATALOGUE` (a test checks that every
language has every key and the same placeholders).
"""

from __future__ import annotations

import math
from typing import Any

from core.errors import StorageUnavailable, UserFacingError, try_again_soon
from core.i18n import en, es

DEFAULT_LANGUAGE = "en"

CATALOGUE: dict[str, dict[str, str]] = {"en": en.TEXTS, "es": es.TEXTS}


def pick_language(code: str | None) -> str:
    """Map a platform locale (`es`, `es-ES`, `es_419`, `en-US`, None) to a catalogue language."""
    if not code:
        return DEFAULT_LANGUAGE
    base = code.replace("_", "-").split("-")[0].lower()
    return base if base in CATALOGUE else DEFAULT_LANGUAGE


def t(key: str, lang: str = DEFAULT_LANGUAGE, **params: Any) -> str:
    """The text for `key` in `lang` (falling back to English), formatted with `params`."""
    table = CATALOGUE.get(lang, CATALOGUE[DEFAULT_LANGUAGE])
    template = table.get(key) or CATALOGUE[DEFAULT_LANGUAGE][key]
    return template.format(**params)


def format_wait(seconds: float, lang: str = DEFAULT_LANGUAGE) -> str:
    """A short human duration: `40 s`, `3 min`."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return t("seconds", lang, n=seconds)
    return t("minutes", lang, n=math.ceil(seconds / 60))


def describe_error(error: BaseException, lang: str = DEFAULT_LANGUAGE) -> str:
    """The user-facing text for any exception; unknown ones get the generic failure text."""
    if isinstance(error, StorageUnavailable):  # not taken: "try again in a moment"
        error = try_again_soon()
    if not isinstance(error, UserFacingError):
        return t("error.failed", lang)
    key = f"error.{error.code}"
    if key not in CATALOGUE[DEFAULT_LANGUAGE]:
        return t("error.failed", lang)
    params: dict[str, Any] = dict(error.params)
    if "retry_after_s" in params:
        params["wait"] = format_wait(float(params["retry_after_s"]), lang)
    if "max_bytes" in params and "max_mb" not in params:
        params["max_mb"] = params["max_bytes"] / 1_000_000
    if "max_pixels" in params:
        params["max_megapixels"] = round(params["max_pixels"] / 1_000_000, 1)
    try:
        return t(key, lang, **params)
    except (KeyError, ValueError, IndexError):
        return t("error.failed", lang)
