"""The web page's words: the language a browser asked for, the page in it, JSON error texts.

Every text comes from the shared catalogue (`core.i18n`): the page's HTML has `{{key}}`
slots filled here, and the texts its script needs travel inside the page as JSON.
"""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path

from aiohttp import web

from core.config import MAX_SEED, MIN_SECONDS, GenerationConfig
from core.errors import UserFacingError
from core.i18n import CATALOGUE, DEFAULT_LANGUAGE, describe_error, pick_language, t

STATIC_DIR = Path(__file__).with_name("static")
# Besides every "web.*" text, the page's script shows these shared ones.
SCRIPT_KEYS = ("queued", "started", "progress", "error.too_large", "error.failed")
_SLOT = "{{%s}}"


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


def web_message(code: str, lang: str) -> str:
    """The text of a web-only error code (`web.error.<code>`)."""
    key = f"web.error.{code}"
    return t(key if key in CATALOGUE[DEFAULT_LANGUAGE] else "web.error.bad_request", lang)


def describe(error: BaseException, lang: str) -> dict[str, str]:
    """`{"code", "message"}` for an error: the web's own wording where it has one."""
    if isinstance(error, UserFacingError):
        if f"web.error.{error.code}" in CATALOGUE[DEFAULT_LANGUAGE] and error.code != "failed":
            return {"code": error.code, "message": web_message(error.code, lang)}
        return {"code": error.code, "message": describe_error(error, lang)}
    return {"code": "failed", "message": describe_error(error, lang)}


def script_texts(lang: str) -> dict[str, str]:
    keys = [k for k in CATALOGUE[DEFAULT_LANGUAGE] if k.startswith("web.")] + list(SCRIPT_KEYS)
    return {key: CATALOGUE.get(lang, {}).get(key) or CATALOGUE[DEFAULT_LANGUAGE][key]
            for key in keys}


@cache
def _template() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


def render_page(lang: str, generation: GenerationConfig) -> str:
    """index.html in `lang`, with the configured bounds in the form."""
    # "</" inside the JSON would end the <script> element early.
    texts = json.dumps(script_texts(lang), ensure_ascii=False).replace("</", "<\\/")
    values = {"lang": lang, "texts": texts, "min_seconds": f"{MIN_SECONDS:g}",
              "max_seconds": f"{generation.max_seconds:g}",
              "seconds": f"{generation.seconds:g}", "max_seed": str(MAX_SEED)}
    page = _template()
    for key, value in values.items():
        page = page.replace(_SLOT % key, value if key == "texts" else html.escape(value))
    for key in CATALOGUE[DEFAULT_LANGUAGE]:
        if key.startswith("web.") and _SLOT % key in page:
            page = page.replace(_SLOT % key, html.escape(t(key, lang)))
    return page
