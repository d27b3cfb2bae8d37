"""The Discord request path shared by posted messages and interactions.

Who asks (admins, language), where a message's pictures are, how one is downloaded
and decoded, what the answer looks like, and following a job to that answer.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import discord

from bot.common.following import follow_job
from bot.common.requests import Requester
from bot.common.tasks import BackgroundTasks
from bot.discord.replies import Answer, DiscordSink, MessageTarget, Target
from bot.discord.views import result_view
from core.config import Config
from core.errors import ImageRejected
from core.i18n import DEFAULT_LANGUAGE, pick_language, t
from core.intake.decode import DecodedImage, decode_image_async
from core.intake.links import all_urls
from core.jobs.events import JobHandle, JobResult
from core.services import Services

logger = logging.getLogger(__name__)

PLATFORM = "discord"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
Source = discord.Attachment | str


class DiscordRequests:
    """Turns Discord users and pictures into jobs, and jobs into answers."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config: Config = services.config
        self.tasks = BackgroundTasks(PLATFORM)

    # ----- who, where, which language ----------------------------------------------------
    def is_admin(self, user: discord.abc.User, permissions: discord.Permissions | None) -> bool:
        """Configured admins, plus Manage Server holders in their own server."""
        return user.id in self.config.discord.admins or bool(permissions
                                                             and permissions.manage_guild)

    def requester(self, user: discord.abc.User, channel_id: int | None, lang: str,
                  permissions: discord.Permissions | None) -> Requester:
        """The asking user; where no channel is known, the chat is the user's own."""
        return Requester(PLATFORM, user_id=str(user.id), chat_id=str(channel_id or user.id),
                         lang=lang, is_admin=self.is_admin(user, permissions))

    @staticmethod
    def guild_lang(guild: discord.Guild | None) -> str:
        return pick_language(guild.preferred_locale.value) if guild else DEFAULT_LANGUAGE

    def watched(self, channel: Any) -> bool:
        """A watched channel, or a thread in one."""
        ids = set(self.config.discord.channels)
        return channel.id in ids or getattr(channel, "parent_id", None) in ids

    def sources(self, message: discord.Message, addressed: bool) -> list[Source]:
        """The images in a message: attachments, links, embed images (capped)."""
        found: list[Source] = []
        for att in message.attachments:
            looks_like_image = (att.content_type or "").startswith("image/") or \
                att.filename.lower().endswith(IMAGE_EXTENSIONS)
            if addressed or looks_like_image:
                found.append(att)
        urls = all_urls(message.content)
        for embed in message.embeds:
            urls += [u for u in (embed.image.url, embed.thumbnail.url) if u]
        seen = {att.url for att in message.attachments}
        for url in urls:
            if url not in seen:
                seen.add(url)
                found.append(url)
        return found[: self.config.discord.max_images_per_message]

    # ----- pictures --------------------------------------------------------------------------
    async def acquire(self, source: Source) -> DecodedImage:
        """Download and decode one image; only `ImageRejected` escapes for bad input."""
        if isinstance(source, str):
            return await self.services.fetcher.fetch_image(source)
        self.check_size(source)
        try:
            data = await source.read()
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            raise ImageRejected("attachment download failed", code="fetch_failed") from exc
        return await decode_image_async(data, self.config.images)

    def check_size(self, attachment: discord.Attachment) -> None:
        limit = self.config.images.max_bytes
        if attachment.size > limit:
            raise ImageRejected("attachment too large", code="too_large", max_bytes=limit)

    # ----- answers ---------------------------------------------------------------------------
    def answer(self, result: JobResult, lang: str) -> Answer:
        """The message a finished clip becomes: caption, buttons, the file or a voice message."""
        settings = self.config.discord
        text = t("caption", lang, caption=result.caption or result.prompt)
        if result.cache_hit:
            text += " " + t("cached", lang)
        fmt = "mp3" if settings.audio_format == "mp3" and not settings.voice_message else "ogg"
        return Answer(result, text, result_view(result.request_id, lang), fmt,
                      settings.voice_message)

    async def follow_job(self, handle: JobHandle, target: Target) -> None:
        sink = DiscordSink(target, lambda result: self.answer(result, target.lang))
        await follow_job(handle, sink, interval=self.config.discord.progress_interval_s)

    def recovered_target(self, client: discord.Client, context: dict[str, Any],
                         lang: str) -> Target | None:
        """Where a job re-run after a restart is answered, from its stored reply context."""
        try:
            if context.get("kind") == "message":
                return MessageTarget(client, lang, channel_id=int(context["channel_id"]),
                                     message_id=int(context["message_id"]),
                                     author_id=int(context["author_id"]),
                                     guild_id=_int_or_none(context.get("guild_id")))
            if context.get("kind") == "interaction":
                # Interaction tokens are never stored: answer in the channel, mentioning them.
                target = MessageTarget(client, lang, channel_id=int(context["channel_id"]),
                                       message_id=None, author_id=int(context["user_id"]))
                target.prefix = f"<@{context['user_id']}> "
                return target
        except (KeyError, TypeError, ValueError):
            return None
        return None


def _int_or_none(value: Any) -> int | None:
    return int(value) if value else None
