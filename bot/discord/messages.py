"""Pictures posted as messages: in watched channels (and their threads), DMs, or with a mention."""

from __future__ import annotations

import asyncio
import logging

import discord

from bot.common.requests import refuse
from bot.discord.replies import MessageTarget, Target, Undeliverable, as_user_error, error_text
from bot.discord.requests import DiscordRequests, Source
from core.errors import GenerationFailed, ImageRejected
from core.options import GenerationOptions

logger = logging.getLogger(__name__)

# In a watched channel, a link to a web page is chat, not a request: these stay silent.
QUIET_LINK_ERRORS = ("not_image", "unsupported_format", "fetch_failed", "fetch_timeout")


class MessageHandlers:
    """Answers posted pictures; one background task per picture."""

    def __init__(self, requests: DiscordRequests) -> None:
        self.requests = requests
        self.config = requests.config

    async def on_message(self, client: discord.Client, message: discord.Message) -> None:
        """Requests in a message: its pictures, or the picture it replies to with a mention."""
        me = client.user
        if me is None or message.author.bot:
            return
        dm = message.guild is None
        # Only a written @mention is a request: `message.mentions` also holds the author of
        # a replied-to message, so every reply to one of our answers would count.
        mentioned = me.id in message.raw_mentions
        if not (dm or mentioned or self.requests.watched(message.channel)):
            return
        addressed = dm or mentioned
        lang = self.requests.guild_lang(message.guild)
        sources = self.requests.sources(message, addressed)
        ref = message.reference.resolved if message.reference else None
        if addressed and not sources and isinstance(ref, discord.Message) \
                and ref.author.id != me.id:
            sources = self.requests.sources(ref, addressed)  # "@Sonify" on someone's picture
        # One message's images take turns within the per-user limit, instead of the
        # later ones being refused as "already in progress".
        turns = asyncio.Semaphore(self.config.jobs.per_user_concurrent)
        if not sources:
            if addressed:
                self.requests.tasks.spawn(self._message_job(client, message, None, lang,
                                                            quiet=False, turns=turns))
            return
        for source in sources:
            self.requests.tasks.spawn(self._message_job(client, message, source, lang,
                                                        quiet=not addressed, turns=turns))

    async def _message_job(self, client: discord.Client, message: discord.Message,
                           source: Source | None, lang: str, *, quiet: bool,
                           turns: asyncio.Semaphore) -> None:
        async with turns:
            await self._message_job_now(client, message, source, lang, quiet=quiet)

    async def _message_job_now(self, client: discord.Client, message: discord.Message,
                               source: Source | None, lang: str, *, quiet: bool) -> None:
        guild_id = message.guild.id if message.guild else None
        target = MessageTarget(client, lang, channel_id=message.channel.id,
                               message_id=message.id, author_id=message.author.id,
                               guild_id=guild_id)
        kind = "url" if isinstance(source, str) else "attachment"
        author = message.author
        perms = author.guild_permissions if isinstance(author, discord.Member) else None
        requester = self.requests.requester(author, message.channel.id, lang, perms)
        try:
            if source is None:
                raise ImageRejected("no image in the message", code="no_image")
            image = await self.requests.acquire(source)
        except Exception as exc:
            err = as_user_error(exc) or GenerationFailed("internal error")
            if quiet and kind == "url" and err.code in QUIET_LINK_ERRORS:
                logger.debug("ignoring a non-image link in a watched channel (%s)", err.code)
                return
            await refuse(self.requests.services.engine, requester, kind, err)
            await _tell(target, error_text(exc, lang))
            return
        request = requester.job(
            source_kind=kind, options=GenerationOptions.from_config(self.config.generation),
            image=image,
            reply_context={"kind": "message", "channel_id": str(message.channel.id),
                           "message_id": str(message.id), "author_id": str(author.id),
                           "guild_id": str(guild_id) if guild_id else None})
        try:
            handle = await self.requests.services.engine.submit(request)  # logs its refusals
        except Exception as exc:
            await _tell(target, error_text(exc, lang))
            return
        self.requests.tasks.follows(handle)
        await self.requests.follow_job(handle, target)


async def _tell(target: Target, text: str) -> None:
    """An error text for the user; nowhere to post is logged, not raised."""
    try:
        await target.error(text)
    except (Undeliverable, discord.HTTPException) as exc:
        logger.warning("could not tell a Discord user about an error: %s", exc)
