"""The web page's words: the language a browser asked for, the page in it, JSON error texts.

Every text comes from the shared catalogue (`core.i18n`): the page's HTML has `{{key}}`
slots filled here, and the texts its script needs travel inside the page as JSON.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from core.config import MAX_SEED, MIN_SECONDS, GenerationConfig
from core.errors import UserFacingError
from core.i18n import CATALOGUE, DEFAULT_LANGUAGE, describe_error, pick_language, t

STATIC_DIR = Path(__file__).with_name("static")
# Our own assets, by name (a fixed list, so no path tricks), with their content types.
STATIC_FILES = {"app.js": "text/javascript", "wave.js": "text/javascript",
                "style.css": "text/css", "favicon.svg": "image/svg+xml"}
# Besides every "web.*" text, the page's script shows these shared ones.
SCRIPT_KEYS = ("queued", "started", "progress", "error.too_large", "error.failed")
# The bots' own words for the buttons they share with the page (filled into index.html).
PAGE_KEYS = ("another_take", "use_my_words", "ask_words", "words_label", "words_placeholder")
_SLOT_PATTERN = re.compile(r"\{\{([A-Za-z0-9_.]+)\}\}")


def request_language(request: web.BaseRequest) -> str:
    """The first catalogue language in the browser's Accept-Language (else English)."""
    header = request.headers.get("Accept-Language", "")
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, index, tag))
    for _, _, tag in sorted(ranked):
        lang = pick_language(tag)
        if lang != DEFAULT_LANGUAGE or tag.lower().startswith(DEFAULT_LANGUAGE):
            return lang
    return DEFAULT_LANGUAGE


def web_message(code: str, lang: str, **params: Any) -> str:
    """The text of a web-only error code (`web.error.<code>`), filled with `params`."""
    key = f"web.error.{code}"
    if key not in CATALOGUE[DEFAULT_LANGUAGE]:
        key = "web.error.bad_request"
    try:
        return t(key, lang, **params)
    except (KeyError, ValueError, IndexError):  # a text whose values did not come with it
        return t("web.error.bad_request", lang)


def describe(error: BaseException, lang: str) -> dict[str, str]:
    """`{"code", "message"}` for an error: the web's own wording where it has one."""
    if isinstance(error, UserFacingError):
        if f"web.error.{error.code}" in CATALOGUE[DEFAULT_LANGUAGE] and error.code != "failed":
            return {"code": error.code, "message": web_message(error.code, lang, **error.params)}
        return {"code": error.code, "message": describe_error(error, lang)}
    return {"code": "failed", "message": describe_error(error, lang)}


def script_texts(lang: str) -> dict[str, str]:
    keys = [k for k in CATALOGUE[DEFAULT_LANGUAGE] if k.startswith("web.")] + list(SCRIPT_KEYS)
    return {key: CATALOGUE.get(lang, {}).get(key) or CATALOGUE[DEFAULT_LANGUAGE][key]
            for key in keys}


@cache
def _template(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def fill(name: str, lang: str, values: dict[str, str], markup: dict[str, str] | None = None
         ) -> str:
    """The static page `name` in `lang`: its `{{key}}` slots take `values` (escaped), `markup`
    (HTML the caller made, trusted) or the catalogue's "web.*" texts — in one pass, so what
    is filled in (a caption, the user's words) is never read for slots itself."""
    trusted = markup or {}
    english = CATALOGUE[DEFAULT_LANGUAGE]

    def slot(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in trusted:
            return trusted[key]
        if key in values:
            return html.escape(values[key])
        if key.startswith("web.") and key in english:
            return html.escape(t(key, lang))
        return match.group(0)

    return _SLOT_PATTERN.sub(slot, _template(name))


def render_page(lang: str, generation: GenerationConfig, words_max_chars: int) -> str:
    """index.html in `lang`, with the configured bounds in the form."""
    # "</" inside the JSON would end the <script> element early.
    texts = json.dumps(script_texts(lang), ensure_ascii=False).replace("</", "<\\/")
    values = {"lang": lang, "min_seconds": f"{MIN_SECONDS:g}",
              "max_seconds": f"{generation.max_seconds:g}",
              "seconds": f"{generation.seconds:g}", "max_seed": str(MAX_SEED),
              "words_max_chars": str(words_max_chars)}
    values.update({key: t(key, lang) for key in PAGE_KEYS})
    return fill("index.html", lang, values, {"texts": texts})
