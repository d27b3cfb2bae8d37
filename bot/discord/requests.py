"""The Discord request path shared by posted messages, interactions and recovery.

Who asks (admins, language), where a message's pictures are, how one is downloaded
and decoded (again after a restart: the row keeps where it was), what the answer looks
like, and taking a request: recorded first, then carried on to its one answer.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from typing import Any

import aiohttp
import discord

from bot.common.answers import VIDEO_FILE, video_notes, video_of
from bot.common.flow import FlowSettings, RequestFlow
from bot.common.requests import Requester
from bot.common.tasks import BackgroundTasks
from bot.discord.replies import Answer, Destination, DiscordAnswerTarget, MessageDestination
from bot.discord.views import result_view
from core.config import Config
from core.errors import ImageRejected
from core.i18n import DEFAULT_LANGUAGE, pick_language, t
from core.intake.decode import DecodedImage
from core.intake.links import all_urls
from core.intake.moving import decode_upload_async
from core.jobs.events import JobHandle, JobResult
from core.jobs.request import JobRequest, Receipt, received_request
from core.options import GenerationOptions
from core.records import Platform, RequestRecord
from core.services import Services

logger = logging.getLogger(__name__)

PLATFORM = Platform.DISCORD
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".gif")
# Discord's cap on one upload by a bot, whatever the server's boost level allows its members.
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
DM_UPLOAD_BYTES = 10 * 1024 * 1024
Source = discord.Attachment | str


def upload_cap(limit: int | None) -> int:
    """The largest MP4 the bot posts back where the platform allows `limit` bytes."""
    return min(limit or DM_UPLOAD_BYTES, MAX_UPLOAD_BYTES)


def is_moving_attachment(content_type: str | None, filename: str) -> bool:
    """An attachment that says it is a video or a GIF (the bytes decide in the end)."""
    kind = (content_type or "").lower()
    return kind.startswith("video/") or kind == "image/gif" or \
        filename.lower().endswith(VIDEO_EXTENSIONS)


class DiscordRequests:
    """Turns Discord users and pictures into jobs, and jobs into answers."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config: Config = services.config
        self.tasks = BackgroundTasks(PLATFORM)
        self.flow = RequestFlow(services.engine, self.tasks, FlowSettings(
            interval=self.config.discord.progress_interval_s, fetch=self.fetch,
            delivered=partial(services.ops.metrics.observe_stage, "delivery")))
        self.settings = services.chat_settings  # what server admins set with /settings
        self.client: discord.Client | None = None  # set when the adapter logs in
        # Until a fresh session has read back what was missed, live messages (the bot's own
        # answers among them) must not move a channel's cursor past messages not read yet:
        # true from the start, and again from any disconnect until the session resumes.
        self.reading_back = True

    # ----- who, where, which language ----------------------------------------------------
    def is_admin(self, user: discord.abc.User, permissions: discord.Permissions | None) -> bool:
        """Configured admins, plus Manage Server holders in their own server."""
        return user.id in self.config.discord.admins or bool(permissions
                                                             and permissions.manage_guild)

    def requester(self, user: discord.abc.User, channel_id: int | None, lang: str,
                  permissions: discord.Permissions | None,
                  guild_id: int | None = None, upload_limit: int | None = None) -> Requester:
        """The asking user; where no channel is known, the chat is the user's own.

        `upload_limit`: what the bot may post there (an interaction's attachment_size_limit,
        a server's filesize_limit); a video answer larger than that is made smaller or sent
        as its sound alone.
        """
        return Requester(PLATFORM, user_id=str(user.id), chat_id=str(channel_id or user.id),
                         lang=lang, is_admin=self.is_admin(user, permissions),
                         pushes_answers=True, user_name=str(user)[:64],
                         per_hour=self.settings.get(PLATFORM, guild_id, "per_hour"),
                         video_cap_bytes=upload_cap(upload_limit))

    def guild_lang(self, guild: discord.Guild | None) -> str:
        """Replies' language where the user's is unknown (posted messages): the server's
        setting, else the server's own locale."""
        if guild is None:
            return DEFAULT_LANGUAGE
        chosen = self.settings.get(PLATFORM, guild.id, "language")
        return str(chosen) if chosen else pick_language(guild.preferred_locale.value)

    def enabled(self, guild_id: int | None) -> bool:
        """False where a server's admins switched Sonify off (then only admins are answered)."""
        return self.settings.get(PLATFORM, guild_id, "enabled") is not False

    def options(self, guild_id: int | None, seconds: float | None = None) -> GenerationOptions:
        """A request's options: what the user asked, else the server's default length."""
        if seconds is None:
            seconds = self.settings.get(PLATFORM, guild_id, "seconds")
        return GenerationOptions.from_config(self.config.generation, seconds=seconds)

    def watched(self, channel: Any) -> bool:
        """A watched channel, or a thread in one: chosen with /settings, else in the config."""
        guild = getattr(channel, "guild", None)
        chosen = self.settings.of(PLATFORM, guild.id).channels("watched") if guild else {}
        configured = set(self.config.discord.channels)
        for cid in (channel.id, getattr(channel, "parent_id", None)):
            if cid is None:
                continue
            if str(cid) in chosen:
                return bool(chosen[str(cid)])
            if cid in configured:
                return True
        return False

    def watched_ids(self) -> list[int]:
        """Every channel watched somewhere: the config's, then those chosen with /settings."""
        chosen = [int(cid) for scope in self.settings.scopes(PLATFORM)
                  for cid, on in scope.channels("watched").items() if on]
        return list(dict.fromkeys([*self.config.discord.channels, *chosen]))

    def sources(self, message: discord.Message, addressed: bool) -> list[Source]:
        """The images in a message: attachments, links, embed images (capped)."""
        found: list[Source] = []
        for att in message.attachments:
            looks_like_image = (att.content_type or "").startswith("image/") or \
                att.filename.lower().endswith(IMAGE_EXTENSIONS) or \
                is_moving_attachment(att.content_type, att.filename)
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
    def limit_for(self, content_type: str | None, filename: str) -> int:
        """The largest attachment of this kind the bot downloads."""
        if is_moving_attachment(content_type, filename):
            return self.config.video.max_bytes
        return self.config.images.max_bytes

    def check_size(self, attachment: discord.Attachment) -> None:
        limit = self.limit_for(attachment.content_type, attachment.filename)
        if attachment.size > limit:
            raise ImageRejected("attachment too large", code="too_large", max_bytes=limit)

    @staticmethod
    def source_of(source: Source) -> dict[str, Any]:
        """Where a picture is, in a form the row can keep (to fetch it after a restart)."""
        if isinstance(source, str):
            return {"kind": "url", "url": source}
        return {"kind": "attachment", "url": source.url, "size": source.size,
                "filename": source.filename, "content_type": source.content_type}

    async def fetch(self, source: dict[str, Any]) -> DecodedImage:
        """A recorded request's picture: an attachment from Discord's CDN, or a link."""
        metrics = self.services.ops.metrics
        with metrics.stage("fetch"):
            data = await self._download(source)
        with metrics.stage("decode"):
            return await decode_upload_async(data, self.config.images, self.config.video)

    async def _download(self, source: dict[str, Any]) -> bytes:
        if source.get("kind") != "attachment":
            return await self.services.fetcher.fetch(
                str(source["url"]), max_bytes=max(self.config.images.max_bytes,
                                                  self.config.video.max_bytes))
        limit = self.limit_for(source.get("content_type"), str(source.get("filename") or ""))
        if int(source.get("size") or 0) > limit:
            raise ImageRejected("attachment too large", code="too_large", max_bytes=limit)
        if self.client is None:
            raise ImageRejected("not connected", code="fetch_failed")
        try:  # the client's own HTTP session: attachments are Discord's, not strangers' links
            data = await self.client.http.get_from_cdn(str(source["url"]))
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            raise ImageRejected("attachment download failed", code="fetch_failed") from exc
        return data

    # ----- answers ---------------------------------------------------------------------------
    def answer(self, result: JobResult, lang: str, guild_id: int | None = None) -> Answer:
        """The message a finished clip becomes: caption, buttons, the file or a voice message
        (the server's reply style, else the config's)."""
        settings = self.config.discord
        style = self.settings.get(PLATFORM, guild_id, "reply_style")
        if style is not None:
            settings = replace(settings, voice_message=style == "voice")
        text = t("caption", lang, caption=result.caption or result.prompt)
        if result.cache_hit:
            text += " " + t("cached", lang)
        text = "\n".join([text, *video_notes(result, lang)])
        if video_of(result):  # the MP4 as the reply's attachment; voice mode is for sounds
            return Answer(result, text, result_view(result.request_id, lang), VIDEO_FILE, False)
        fmt = "mp3" if settings.audio_format == "mp3" and not settings.voice_message else "ogg"
        return Answer(result, text, result_view(result.request_id, lang), fmt,
                      settings.voice_message)

    def answer_target(self, target: Destination) -> DiscordAnswerTarget:
        return DiscordAnswerTarget(target, lambda result: self.answer(result, target.lang,
                                                                      target.guild_id))

    async def take(self, request: JobRequest, target: Destination) -> bool:
        """Record the request (the durable point), then answer it in the background.

        False for a redelivered request; a refusal (logged by the engine) is raised.
        """
        return await self.flow.take(request, self.answer_target(target))

    # ----- after a restart -----------------------------------------------------------------
    async def on_received(self, record: RequestRecord, receipt: Receipt) -> None:
        """A request recorded before a restart whose picture was not fetched yet."""
        target = self.recovered_target(record.reply_context, record.lang)
        await self.flow.resume(received_request(record), receipt,
                               self.answer_target(target) if target else None)

    async def on_recovered(self, handle: JobHandle) -> None:
        """A job re-run (or finished, not yet delivered) after a restart: answer it there."""
        target = self.recovered_target(handle.request.reply_context, handle.request.lang)
        if target is None:
            logger.warning("recovered Discord job %s has no usable reply context", handle.id)
            return
        self.flow.answer_recovered(handle, self.answer_target(target))

    def recovered_target(self, context: dict[str, Any], lang: str) -> Destination | None:
        """Where a request taken up after a restart is answered, from its reply context."""
        client = self.client
        if client is None:
            return None
        try:
            if context.get("kind") == "message":
                return MessageDestination(client, lang, channel_id=int(context["channel_id"]),
                                          message_id=int(context["message_id"]),
                                          author_id=int(context["author_id"]),
                                          guild_id=_int_or_none(context.get("guild_id")),
                                          status_message_id=_int_or_none(
                                              context.get("status_message_id")))
            if context.get("kind") == "interaction":
                # Interaction tokens are never stored: answer in the channel, mentioning them.
                target = MessageDestination(client, lang, channel_id=int(context["channel_id"]),
                                            message_id=None,
                                            author_id=int(context["user_id"]),
                                            guild_id=_int_or_none(context.get("guild_id")))
                target.prefix = f"<@{context['user_id']}> "
                return target
        except (KeyError, TypeError, ValueError):
            return None
        return None


def _int_or_none(value: Any) -> int | None:
    return int(value) if value else None
