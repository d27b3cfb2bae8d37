"""Pictures posted as messages: in watched channels (and their threads), DMs, or with a mention.

A message's requests are recorded before anything is shown; then the channel's cursor
moves past the message. A message that arrives while the bot is down (or whose requests
were not recorded before a crash) is read back from the channel's history after the next
start (`bot.discord.catch_up`) and goes through here like a live one, once.
"""

from __future__ import annotations

import logging

import discord

from bot.common.requests import Requester, refuse
from bot.discord.replies import (
    Destination,
    MessageDestination,
    Undeliverable,
    as_user_error,
    error_text,
)
from bot.discord.requests import PLATFORM, DiscordRequests, Source
from core.errors import GenerationFailed, ImageRejected, StorageUnavailable, UserFacingError
from core.i18n import DEFAULT_LANGUAGE
from core.records import SourceKind

logger = logging.getLogger(__name__)

# In a watched channel, a link to a web page is chat, not a request: these stay silent.
QUIET_LINK_ERRORS = ("not_image", "unsupported_format", "fetch_failed", "fetch_status",
                     "fetch_unreachable", "fetch_timeout")


class RecordingMarks:
    """How far each channel's messages are all recorded: where its cursor may move.

    discord.py handles each message in a task of its own, so a later message (or the bot's
    own reply) can be recorded while an earlier one still is being; a cursor moved past that
    one would lose it to a crash, as nothing reads it back. Per channel: the messages being
    recorded, and those done but still behind one that is not.
    """

    def __init__(self) -> None:
        self._open: dict[int, set[int]] = {}
        self._done: dict[int, set[int]] = {}

    def begin(self, channel_id: int, message_id: int) -> None:
        """A message starts being recorded (before its handler first awaits anything)."""
        self._open.setdefault(channel_id, set()).add(message_id)

    def end(self, channel_id: int, message_id: int) -> int | None:
        """The message is recorded (or refused); the id the cursor may now move to, if any."""
        opened = self._open.get(channel_id, set())
        opened.discard(message_id)
        done = self._done.setdefault(channel_id, set())
        done.add(message_id)
        oldest_open = min(opened, default=None)
        ready = {m for m in done if oldest_open is None or m < oldest_open}
        done -= ready
        if not opened:
            self._open.pop(channel_id, None)
        if not done:
            self._done.pop(channel_id, None)
        return max(ready, default=None)


class MessageHandlers:
    """Takes the requests in posted messages, one per picture."""

    def __init__(self, requests: DiscordRequests) -> None:
        self.requests = requests
        self.config = requests.config
        self._recording = RecordingMarks()

    def tracked(self, channel: object) -> bool:
        """A channel whose messages are read back after a restart: watched, or a DM."""
        return isinstance(channel, discord.DMChannel) or self.requests.watched(channel)

    async def on_message(self, client: discord.Client, message: discord.Message, *,
                         read_back: bool = False) -> None:
        """Take a message's requests: its pictures, or the picture it replies to with a mention.

        Returns once they are recorded; then the channel's cursor moves past the message —
        unless missed messages are being read back (`read_back` marks those).
        """
        me = client.user
        if me is None:
            return
        self._recording.begin(message.channel.id, message.id)
        try:
            if not message.author.bot:
                await self._take_all(client, message, me)
        except Exception:
            # Unexpected (discord.py logs it): not tried again live, so not waited for.
            await self._recorded(message, read_back)
            raise
        # Cancelled by a stop mid-way, a message stays open: the cursor stays before it.
        await self._recorded(message, read_back)

    async def _recorded(self, message: discord.Message, read_back: bool) -> None:
        """Move the channel's cursor as far as every message before it is recorded."""
        last = self._recording.end(message.channel.id, message.id)
        if last is None or not self.tracked(message.channel):
            return
        # While missed messages are read back, a live one only starts a channel's cursor
        # (a first DM): moving an existing cursor would skip what is not read yet.
        try:
            await self.requests.services.cursors.advance(
                PLATFORM, str(message.channel.id), str(last),
                is_private=message.guild is None,
                only_new=self.requests.reading_back and not read_back)
        except StorageUnavailable as exc:  # the next recorded message moves it past this one
            logger.info("discord: the cursor of channel %s stays (%s)", message.channel.id, exc)

    async def _take_all(self, client: discord.Client, message: discord.Message,
                        me: discord.ClientUser) -> None:
        dm = message.guild is None
        # Only a written @mention is a request: `message.mentions` also holds the author of
        # a replied-to message, so every reply to one of our answers would count.
        mentioned = me.id in message.raw_mentions
        if not (dm or mentioned or self.requests.watched(message.channel)):
            return
        addressed = dm or mentioned
        if message.guild is not None and not self.requests.enabled(message.guild.id) \
                and not self._requester(message, DEFAULT_LANGUAGE).is_admin:
            return  # switched off in this server by its admins: they alone are answered
        lang = self.requests.guild_lang(message.guild)
        sources = self.requests.sources(message, addressed)
        ref = message.reference.resolved if message.reference else None
        if addressed and not sources and isinstance(ref, discord.Message) \
                and ref.author.id != me.id:
            sources = self.requests.sources(ref, addressed)  # "@Sonify" on someone's picture
        if not sources:
            if addressed:
                await self._refuse(client, message, lang, SourceKind.ATTACHMENT, 0,
                                   ImageRejected("no image in the message", code="no_image"))
            return
        for index, source in enumerate(sources):
            await self._take_one(client, message, index, source, lang, quiet=not addressed)

    def _target(self, client: discord.Client, message: discord.Message, lang: str) -> Destination:
        return MessageDestination(client, lang, channel_id=message.channel.id,
                                  message_id=message.id, author_id=message.author.id,
                                  guild_id=message.guild.id if message.guild else None)

    def _requester(self, message: discord.Message, lang: str) -> Requester:
        author = message.author
        perms = author.guild_permissions if isinstance(author, discord.Member) else None
        limit = message.guild.filesize_limit if message.guild else None
        return self.requests.requester(author, message.channel.id, lang, perms,
                                       message.guild.id if message.guild else None, limit)

    async def _take_one(self, client: discord.Client, message: discord.Message, index: int,
                        source: Source, lang: str, *, quiet: bool) -> None:
        kind = SourceKind.URL if isinstance(source, str) else SourceKind.ATTACHMENT
        guild_id = message.guild.id if message.guild else None
        request = self._requester(message, lang).job(
            source_kind=kind, options=self.requests.options(guild_id),
            source=self.requests.source_of(source), dedupe_key=_key(message, index),
            reply_context={"kind": "message", "channel_id": str(message.channel.id),
                           "message_id": str(message.id), "author_id": str(message.author.id),
                           "guild_id": str(guild_id) if guild_id else None})
        request.extra_picture = index > 0
        try:
            if isinstance(source, discord.Attachment):
                self.requests.check_size(source)  # refused at once, before any download
            elif quiet:
                # A link in a watched channel is a request only if it is a picture: look
                # first, record after (a crash in between leaves the cursor before it).
                image = await self.requests.fetch(request.source or {})
                request = request.with_image(image)
        except UserFacingError as exc:
            if quiet and kind == SourceKind.URL and exc.code in QUIET_LINK_ERRORS:
                logger.debug("ignoring a non-image link in a watched channel (%s)", exc.code)
                return
            await self._refuse(client, message, lang, kind, index, exc)
            return
        try:
            await self.requests.take(request, self._target(client, message, lang))
        except UserFacingError as exc:  # refused by the engine, which logged it
            await _tell(self._target(client, message, lang), error_text(exc, lang))
        except StorageUnavailable as exc:  # not recorded (the request log is away): not taken
            await _tell(self._target(client, message, lang), error_text(exc, lang))

    async def _refuse(self, client: discord.Client, message: discord.Message, lang: str,
                      kind: SourceKind, index: int, error: BaseException) -> None:
        """A request refused before it was recorded: logged, then told (once per message)."""
        err = as_user_error(error) or GenerationFailed("internal error")
        if await refuse(self.requests.services.engine, self._requester(message, lang), kind,
                        err, dedupe_key=_key(message, index)):
            await _tell(self._target(client, message, lang), error_text(error, lang))


def _key(message: discord.Message, index: int) -> str:
    """The dedupe key of a message's n-th picture: read again after a restart, it is known."""
    return f"{PLATFORM}:message:{message.id}:{index}"


async def _tell(target: Destination, text: str) -> None:
    """An error text for the user; nowhere to post is logged, not raised."""
    try:
        await target.error(text)
    except (Undeliverable, discord.HTTPException) as exc:
        logger.warning("could not tell a Discord user about an error: %s", exc)
