"""Reading Telegram messages: where the image is, which options were asked, who is addressed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from telegram import Message, MessageEntity

from core.errors import ImageRejected
from core.intake.links import first_url
from core.records import SourceKind

# Marks the "Use my words" question with the request it belongs to; language-neutral,
# so the ask can be matched to its request from the reply alone, even after a restart.
WORDS_REF = "🔖"
_WORDS_REF_RE = re.compile(re.escape(WORDS_REF) + r"\s*([A-Za-z0-9_-]{1,40})\s*$")
_COMMAND_RE = re.compile(r"^/(\w+)(?:@(\w+))?(?:\s|$)")


# Telegram's moving pictures, by the name of their field in a message.
MOVING_KINDS = (SourceKind.ANIMATION, SourceKind.VIDEO, SourceKind.VIDEO_NOTE)

@dataclass(frozen=True)
class ImageRef:
    """Where a message's image is: a Telegram file (photo/document) or a link."""

    kind: SourceKind  # a photo, a document (or a sticker), a link, or a moving picture
    file_id: str = ""
    file_size: int | None = None
    url: str = ""
    mime_type: str | None = None
    file_name: str | None = None


def find_image(message: Message | None) -> ImageRef | None:
    """The image a message holds: the largest photo, a file, or the first link in its text."""
    if message is None:
        return None
    if message.photo:
        best = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return ImageRef(SourceKind.PHOTO, file_id=best.file_id, file_size=best.file_size)
    # Moving pictures: the file itself, never its thumbnail. A GIF arrives as an `animation`
    # (a silent MP4), with a `document` beside it for old clients: the animation wins.
    for kind in MOVING_KINDS:
        media = getattr(message, kind.value)
        if media is not None:
            return ImageRef(kind, file_id=media.file_id, file_size=media.file_size,
                            mime_type=getattr(media, "mime_type", None),
                            file_name=getattr(media, "file_name", None))
    if message.document is not None:
        doc = message.document
        return ImageRef(SourceKind.DOCUMENT, file_id=doc.file_id, file_size=doc.file_size,
                        mime_type=doc.mime_type, file_name=doc.file_name)
    if message.sticker is not None and not (message.sticker.is_animated
                                            or message.sticker.is_video):
        return ImageRef(SourceKind.DOCUMENT, file_id=message.sticker.file_id,
                        file_size=message.sticker.file_size, mime_type="image/webp")
    url = first_url(message.text or message.caption or "")
    # A link hidden behind words ("[this](https://…)") lives only in the entities.
    hidden = [e.url for e in (*message.entities, *message.caption_entities)
              if e.type == MessageEntity.TEXT_LINK and e.url]
    url = url or next((u for u in hidden if first_url(u)), None)
    return ImageRef(SourceKind.URL, url=url) if url else None




def is_moving(ref: ImageRef) -> bool:
    """A video, an animation, or a document that says it is one."""
    mime = (ref.mime_type or "").lower()
    return ref.kind in MOVING_KINDS or (ref.kind == SourceKind.DOCUMENT and (
        mime.startswith("video/") or mime == "image/gif"))


def check_file(ref: ImageRef, limit_bytes: int) -> None:
    """Refuse, before any download, files that are too large or plainly not images or
    videos."""
    if ref.file_size is not None and ref.file_size > limit_bytes:
        raise ImageRejected("file too large", code="too_large", max_bytes=limit_bytes)
    mime = (ref.mime_type or "").lower()
    if ref.kind != SourceKind.DOCUMENT or mime.startswith(("image/", "video/")) or \
            mime in ("", "application/octet-stream"):
        return
    suffix = PurePosixPath(ref.file_name or "").suffix.lstrip(".")
    fmt = (suffix or mime.rsplit("/", 1)[-1].split("+")[0] or "?").upper()[:12]
    raise ImageRejected(f"document of type {mime}", code="unsupported_format", format=fmt)


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
