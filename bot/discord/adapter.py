"""The Discord adapter: a thin layer between discord.py and the job engine.

It understands images posted in watched channels (or anywhere the bot is mentioned,
or in DMs), `/sonify`, the "Sonify this image" message command, the buttons under
an answer, and `/stats`. Every request goes through `services.engine`; every user
text comes from `core.i18n`. Requests (and their refusals) are logged by the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import discord
from discord import app_commands

from bot.discord.commands import (
    CatalogueTranslator,
    build_commands,
    guard_token_logs,
    patch_endpoints,
    quiet_voice_warnings,
    sync_commands,
    sync_tree,
)
from bot.discord.interactions import PLATFORM, InteractionHandlers
from bot.discord.replies import (
    Answer,
    MessageTarget,
    Target,
    Undeliverable,
    as_user_error,
    error_text,
    follow,
)
from bot.discord.views import AgainButton, WordsButton, result_view
from core.errors import ConfigError, GenerationFailed, ImageRejected, ShuttingDown, UserFacingError
from core.i18n import DEFAULT_LANGUAGE, pick_language, t
from core.intake.decode import DecodedImage, decode_image_async
from core.intake.links import all_urls
from core.jobs.events import JobHandle, JobRequest, JobResult
from core.options import GenerationOptions
from core.services import Services

logger = logging.getLogger(__name__)
__all__ = ["DiscordAdapter", "sync_commands"]  # `sonify sync-commands` imports it from here

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
STOP_GRACE_S = 10.0
QUIET_LINK_ERRORS = ("not_image", "unsupported_format", "fetch_failed", "fetch_timeout")
Source = discord.Attachment | str


class SonifyClient(discord.Client):
    """discord.py's client, wired to the adapter (RoboDanny-style setup in `setup_hook`)."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        quiet_voice_warnings()
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: needed to see attachments of messages
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none())
        self.sonify = adapter
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = adapter.interactions.report  # type: ignore[assignment]

    async def setup_hook(self) -> None:
        await self.sonify.setup(self)

    async def on_ready(self) -> None:
        logger.info("connected to Discord as %s (id %s) in %d server(s)", self.user,
                 self.user.id if self.user else "?", len(self.guilds))

    async def on_message(self, message: discord.Message) -> None:
        await self.sonify.on_message(message)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is discord.InteractionType.modal_submit:
            await self.sonify.interactions.on_modal(interaction)


class DiscordAdapter:
    """`DiscordAdapter(services)`: start() logs in and connects; stop() disconnects."""

    name = "discord"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config = services.config
        self.cfg = services.config.discord
        self.client: SonifyClient | None = None
        self._connection: asyncio.Task[None] | None = None
        self._tasks: dict[asyncio.Task[None], JobHandle | None] = {}
        self._restore: Callable[[], None] | None = None
        self.interactions = InteractionHandlers(self)

    # ----- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        if not self.cfg.token:
            raise ConfigError(f"{self.config.source}: [discord] token is not set")
        guard_token_logs()
        self._restore = patch_endpoints(self.cfg.api_base_url, self.cfg.gateway_url)
        self.client = SonifyClient(self)
        self.services.engine.on_recovered(PLATFORM, self._on_recovered)
        try:
            await self.client.login(self.cfg.token)
        except discord.LoginFailure:
            await self.stop()
            raise ConfigError(f"{self.config.source}: [discord] token was refused by Discord"
                              ) from None
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            await self.stop()
            raise ConfigError(f"{self.config.source}: [discord] cannot reach "
                              f"{self.cfg.api_base_url} ({type(exc).__name__})") from None
        self._connection = asyncio.create_task(self._connect(), name="discord-gateway")

    async def _connect(self) -> None:
        assert self.client is not None
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            logger.error("Discord refused the connection: enable the Message Content intent for "
                      "this bot (Developer Portal > your application > Bot)")
        except Exception:
            logger.exception("the Discord connection ended")

    async def setup(self, client: SonifyClient) -> None:
        """Shared resources, built once per login: commands, translator, persistent buttons."""
        await client.tree.set_translator(CatalogueTranslator())
        build_commands(client.tree, self.config)
        client.add_dynamic_items(AgainButton, WordsButton)
        if self.cfg.sync_commands:
            try:
                count = await sync_tree(client.tree, self.cfg.guilds)
                logger.info("registered %d Discord commands", count)
            except discord.HTTPException as exc:
                logger.warning("could not register Discord commands: %s %s", exc.status, exc.text)

    async def stop(self) -> None:
        """Let answers already computed go out (bounded), then disconnect."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=STOP_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.client is not None:
            await self.client.close()
        if self._connection is not None:
            await asyncio.gather(self._connection, return_exceptions=True)
            self._connection = None
        if self._restore is not None:
            self._restore()
            self._restore = None

    def spawn(self, coro: Coroutine[Any, Any, None], handle: JobHandle | None = None) -> None:
        task = asyncio.create_task(coro)
        self._tasks[task] = handle
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("a Discord delivery task failed", exc_info=task.exception())

    # ----- who, where, which language ----------------------------------------------------
    def is_admin(self, user: discord.abc.User, permissions: discord.Permissions | None) -> bool:
        """Configured admins, plus Manage Server holders in their own server."""
        return user.id in self.cfg.admins or bool(permissions and permissions.manage_guild)

    @staticmethod
    def guild_lang(guild: discord.Guild | None) -> str:
        return pick_language(guild.preferred_locale.value) if guild else DEFAULT_LANGUAGE

    def _watched(self, channel: Any) -> bool:
        ids = set(self.cfg.channels)
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
        return found[: self.cfg.max_images_per_message]

    # ----- shared request path --------------------------------------------------------------
    async def acquire(self, source: Source) -> DecodedImage:
        """Download and decode one image; only `ImageRejected` escapes for bad input."""
        images = self.config.images
        if isinstance(source, str):
            return await self.services.fetcher.fetch_image(source)
        self.check_size(source)
        try:
            data = await source.read()
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            raise ImageRejected("attachment download failed", code="fetch_failed") from exc
        return await decode_image_async(data, images)

    def check_size(self, attachment: discord.Attachment) -> None:
        limit = self.config.images.max_bytes
        if attachment.size > limit:
            raise ImageRejected("attachment too large", code="too_large", max_bytes=limit)

    def _answer(self, result: JobResult, lang: str) -> Answer:
        text = t("caption", lang, caption=result.caption or result.prompt)
        if result.cache_hit:
            text += " " + t("cached", lang)
        fmt = "mp3" if self.cfg.audio_format == "mp3" and not self.cfg.voice_message else "ogg"
        return Answer(result, text, result_view(result.request_id, lang), fmt,
                      self.cfg.voice_message)

    async def follow_job(self, handle: JobHandle, target: Target) -> None:
        await follow(handle, target, interval=self.cfg.progress_interval_s,
                     make_answer=lambda result: self._answer(result, target.lang))

    async def log_refusal(self, *, user_id: int, chat_id: int | None, kind: str,
                          error: UserFacingError, lang: str) -> None:
        try:
            await self.services.engine.reject(platform=PLATFORM, user_id=str(user_id),
                                              chat_id=str(chat_id or user_id),
                                              source_kind=kind, error=error, lang=lang)
        except Exception:
            logger.exception("could not log a refused Discord request")

    # ----- posted images ---------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user if self.client else None
        if me is None or message.author.bot:
            return
        dm = message.guild is None
        # Only a written @mention is a request: `message.mentions` also holds the author of
        # a replied-to message, so every reply to one of our answers would count.
        mentioned = me.id in message.raw_mentions
        if not (dm or mentioned or self._watched(message.channel)):
            return
        addressed = dm or mentioned
        lang = self.guild_lang(message.guild)
        sources = self.sources(message, addressed)
        ref = message.reference.resolved if message.reference else None
        if addressed and not sources and isinstance(ref, discord.Message) \
                and ref.author.id != me.id:
            sources = self.sources(ref, addressed)  # "@Sonify" in reply to someone's picture
        # One message's images take turns within the per-user limit, instead of the
        # later ones being refused as "already in progress".
        turns = asyncio.Semaphore(self.config.jobs.per_user_concurrent)
        if not sources:
            if addressed:
                self.spawn(self._message_job(message, None, lang, quiet=False, turns=turns))
            return
        for source in sources:
            self.spawn(self._message_job(message, source, lang, quiet=not addressed,
                                         turns=turns))

    async def _message_job(self, message: discord.Message, source: Source | None, lang: str,
                           *, quiet: bool, turns: asyncio.Semaphore) -> None:
        async with turns:
            await self._message_job_now(message, source, lang, quiet=quiet)

    async def _message_job_now(self, message: discord.Message, source: Source | None,
                               lang: str, *, quiet: bool) -> None:
        assert self.client is not None
        guild_id = message.guild.id if message.guild else None
        target = MessageTarget(self.client, lang, channel_id=message.channel.id,
                               message_id=message.id, author_id=message.author.id,
                               guild_id=guild_id)
        kind = "url" if isinstance(source, str) else "attachment"
        author = message.author
        perms = author.guild_permissions if isinstance(author, discord.Member) else None
        try:
            if source is None:
                raise ImageRejected("no image in the message", code="no_image")
            image = await self.acquire(source)
        except Exception as exc:
            err = as_user_error(exc) or GenerationFailed("internal error")
            if quiet and kind == "url" and err.code in QUIET_LINK_ERRORS:
                # A watched channel is also a chat: a link to a web page is not a request.
                logger.debug("ignoring a non-image link in a watched channel (%s)", err.code)
                return
            await self.log_refusal(user_id=author.id, chat_id=message.channel.id, kind=kind,
                                   error=err, lang=lang)
            await self._deliver_error(target, error_text(exc, lang))
            return
        request = JobRequest(
            platform=PLATFORM, user_id=str(author.id), chat_id=str(message.channel.id),
            source_kind=kind, options=GenerationOptions.from_config(self.config.generation),
            image=image, is_admin=self.is_admin(author, perms), lang=lang,
            reply_context={"kind": "message", "channel_id": str(message.channel.id),
                           "message_id": str(message.id), "author_id": str(author.id),
                           "guild_id": str(guild_id) if guild_id else None})
        try:
            handle = await self.services.engine.submit(request)  # logs its own refusals...
        except Exception as exc:
            if isinstance(exc, ShuttingDown):  # ...except this one
                await self.log_refusal(user_id=author.id, chat_id=message.channel.id,
                                       kind=kind, error=exc, lang=lang)
            await self._deliver_error(target, error_text(exc, lang))
            return
        self._tasks[asyncio.current_task()] = handle  # type: ignore[index]
        await self.follow_job(handle, target)

    async def _deliver_error(self, target: Target, text: str) -> None:
        try:
            await target.error(text)
        except (Undeliverable, discord.HTTPException) as exc:
            logger.warning("could not tell a Discord user about an error: %s", exc)

    # ----- after a restart ----------------------------------------------------------------
    async def _on_recovered(self, handle: JobHandle) -> None:
        """Answer a job that was re-run (or interrupted) after a crash, where it was asked."""
        target = self._target_from(handle.request.reply_context, handle.request.lang)
        if target is None:
            logger.warning("recovered Discord job %s has no usable reply context", handle.id)
            return
        self.spawn(self.follow_job(handle, target), handle)

    def _target_from(self, ctx: dict[str, Any], lang: str) -> Target | None:
        assert self.client is not None
        try:
            if ctx.get("kind") == "message":
                return MessageTarget(self.client, lang, channel_id=int(ctx["channel_id"]),
                                     message_id=int(ctx["message_id"]),
                                     author_id=int(ctx["author_id"]),
                                     guild_id=_int_or_none(ctx.get("guild_id")))
            if ctx.get("kind") == "interaction":
                target = MessageTarget(self.client, lang, channel_id=int(ctx["channel_id"]),
                                       message_id=None, author_id=int(ctx["user_id"]))
                target.prefix = f"<@{ctx['user_id']}> "
                return target
        except (KeyError, TypeError, ValueError):
            return None
        return None


def _int_or_none(value: Any) -> int | None:
    return int(value) if value else None
