"""Reading Telegram messages: where the image is, which options were asked, who is addressed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from telegram import Message, MessageEntity

from core.config import GenerationConfig
from core.errors import BadRequest, ImageRejected
from core.intake.links import first_url
from core.options import MAX_SEED, GenerationOptions, check_seed

_SECONDS_RE = re.compile(r"^(\d+(?:[.,]\d+)?)\s*(?:s|sec|secs|seconds?|seg|segundos?)$", re.I)
_SECONDS_KEYS = {"s", "sec", "secs", "second", "seconds", "len", "length", "duration", "dur",
                 "seg", "segundos", "duracion", "duración"}
_SEED_KEYS = {"seed", "semilla"}
# Marks the "Use my words" question with the request it belongs to; language-neutral,
# so the ask can be matched to its request from the reply alone, even after a restart.
WORDS_REF = "🔖"
_WORDS_REF_RE = re.compile(re.escape(WORDS_REF) + r"\s*([A-Za-z0-9_-]{1,40})\s*$")
_COMMAND_RE = re.compile(r"^/(\w+)(?:@(\w+))?(?:\s|$)")


@dataclass(frozen=True)
class ImageRef:
    """Where a message's image is: a Telegram file (photo/document) or a link."""

    kind: str  # "photo" | "document" | "url"
    file_id: str = ""
    file_size: int | None = None
    url: str = ""
    mime_type: str | None = None
    file_name: str | None = None


@dataclass(frozen=True)
class Asked:
    """The options of one request: clip options and an optional fixed seed."""

    options: GenerationOptions
    seed: int | None = None


def find_image(message: Message | None) -> ImageRef | None:
    """The image a message holds: the largest photo, a file, or the first link in its text."""
    if message is None:
        return None
    if message.photo:
        best = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return ImageRef("photo", file_id=best.file_id, file_size=best.file_size)
    if message.document is not None:
        doc = message.document
        return ImageRef("document", file_id=doc.file_id, file_size=doc.file_size,
                        mime_type=doc.mime_type, file_name=doc.file_name)
    if message.sticker is not None and not (message.sticker.is_animated
                                            or message.sticker.is_video):
        return ImageRef("document", file_id=message.sticker.file_id,
                        file_size=message.sticker.file_size, mime_type="image/webp")
    url = first_url(message.text or message.caption or "")
    # A link hidden behind words ("[this](https://…)") lives only in the entities.
    hidden = [e.url for e in (*message.entities, *message.caption_entities)
              if e.type == MessageEntity.TEXT_LINK and e.url]
    url = url or next((u for u in hidden if first_url(u)), None)
    return ImageRef("url", url=url) if url else None


def check_file(ref: ImageRef, limit_bytes: int) -> None:
    """Refuse, before any download, files that are too large or plainly not images."""
    if ref.file_size is not None and ref.file_size > limit_bytes:
        raise ImageRejected("file too large", code="too_large", max_bytes=limit_bytes)
    mime = (ref.mime_type or "").lower()
    if ref.kind != "document" or mime.startswith("image/") or mime in ("",
                                                                        "application/octet-stream"):
        return
    suffix = PurePosixPath(ref.file_name or "").suffix.lstrip(".")
    fmt = (suffix or mime.rsplit("/", 1)[-1].split("+")[0] or "?").upper()[:12]
    raise ImageRejected(f"document of type {mime}", code="unsupported_format", format=fmt)


def parse_options(words: Sequence[str], gen: GenerationConfig, *, strict: bool = True) -> Asked:
    """Options like `8s`, `seconds=8`, `seed=42` among the words; links and other words pass.

    Unknown `key=value` words are refused when `strict` (a command), ignored otherwise (free
    text). Raises `BadRequest` (codes ``bad_seconds``, ``bad_seed``, ``bad_option``).
    """
    seconds: float | None = None
    seed: int | None = None
    for word in words:
        if word.lower().startswith(("http://", "https://")):
            continue
        if match := _SECONDS_RE.match(word):
            seconds = _number(match.group(1), gen)
            continue
        if "=" not in word:
            continue
        key, _, value = word.partition("=")
        key = key.strip().lower()
        if key in _SEED_KEYS:
            seed = _seed(value)
        elif key in _SECONDS_KEYS:
            seconds = _number(re.sub(r"\s*s(ec(onds?)?)?$", "", value.strip(), flags=re.I), gen)
        elif strict:
            raise BadRequest(f"unknown option {key!r}", code="bad_option")
    options = GenerationOptions.from_config(gen, seconds=seconds)
    return Asked(options, seed)


def _number(text: str, gen: GenerationConfig) -> float:
    try:
        return float(text.replace(",", "."))
    except ValueError:
        raise BadRequest("seconds is not a number", code="bad_seconds",
                         max_seconds=gen.max_seconds) from None


def _seed(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise BadRequest("seed is not a whole number", code="bad_seed",
                         max_seed=MAX_SEED) from None
    return check_seed(value)


def command_words(text: str | None) -> tuple[str | None, str | None, list[str]]:
    """Split `/cmd@bot arg…` into (command, addressed bot username, args); no command → None."""
    if not text:
        return None, None, []
    match = _COMMAND_RE.match(text)
    if not match:
        return None, None, text.split()
    return match.group(1).lower(), match.group(2), text[match.end():].split()


def mentions(message: Message, username: str, bot_id: int) -> bool:
    """True when the message (text or caption) mentions the bot by @name or by link."""
    entities = message.parse_entities() or message.parse_caption_entities()
    for entity, text in entities.items():
        if entity.type == MessageEntity.MENTION and text.lower() == f"@{username.lower()}":
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user and \
                entity.user.id == bot_id:
            return True
    return False


def words_ref(text: str | None) -> str | None:
    """The request id a "Use my words" question carries (see `WORDS_REF`), if any."""
    match = _WORDS_REF_RE.search(text or "")
    return match.group(1) if match else None
