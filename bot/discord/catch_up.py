"""Reading back what was posted while the bot was away, and answering it once.

Discord does not redeliver messages to a bot that was down (or whose gateway session was
lost). So every tracked channel — the watched ones, their threads, and the DMs the bot
has answered in — keeps a cursor: the last message whose requests were recorded. On
each fresh gateway session (`on_ready`: at start-up and after a reconnect that could not
resume) the messages after each cursor are read, oldest first, and go through the same
path as live ones; each picture's dedupe key makes sure it is answered once.

Bounds: only messages from the last `[discord] catch_up_hours`, at most
`catch_up_max_per_channel` per channel. A watched channel without a cursor yet (the
first start) is not read back: the cursor starts at the present.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

import discord

from bot.discord.messages import MessageHandlers
from bot.discord.requests import PLATFORM, DiscordRequests

logger = logging.getLogger(__name__)


class CatchUp:
    """Answers the messages posted in tracked channels since their cursors."""

    def __init__(self, requests: DiscordRequests, messages: MessageHandlers) -> None:
        self.requests, self.messages = requests, messages
        self.settings = requests.config.discord
        self._lock = asyncio.Lock()

    async def run(self, client: discord.Client) -> int:
        """Read back every tracked channel; returns how many messages were gone through."""
        if self.settings.catch_up_hours <= 0 or self.settings.catch_up_max_per_channel <= 0:
            return 0
        async with self._lock:  # a reconnect during a catch-up waits for it
            channel_cursors = self.requests.services.cursors
            cursors = {int(c): (int(last), private)
                       for c, last, private in await channel_cursors.known(PLATFORM)}
            oldest = discord.utils.time_snowflake(
                discord.utils.utcnow() - datetime.timedelta(hours=self.settings.catch_up_hours))
            seen = 0
            for channel_id in self._channels(cursors):
                cursor = cursors.get(channel_id)
                try:
                    channel = await self._channel(client, channel_id)
                    if channel is None:
                        continue
                    if cursor is None:  # first start: what came before is not ours to answer
                        await channel_cursors.advance(
                            PLATFORM, str(channel_id), str(discord.utils.time_snowflake(
                                discord.utils.utcnow())), is_private=False)
                        continue
                    seen += await self._read_back(client, channel, max(cursor[0], oldest))
                except discord.HTTPException as exc:
                    logger.warning("could not read back Discord channel %s: %s %s", channel_id,
                                   exc.status, exc.text)
            if seen:
                logger.info("caught up with %d message(s) posted while away", seen)
            return seen

    def _channels(self, cursors: dict[int, tuple[int, bool]]) -> list[int]:
        """Watched channels, then every other tracked channel (threads of them, DMs)."""
        watched = self.requests.watched_ids()
        return watched + [c for c in cursors if c not in watched]

    async def _channel(self, client: discord.Client,
                       channel_id: int) -> discord.abc.Messageable | None:
        channel = client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await client.fetch_channel(channel_id)
            except (discord.NotFound, discord.Forbidden):
                return None  # deleted, or no longer visible to the bot
        if not isinstance(channel, discord.abc.Messageable):
            return None
        if not self.messages.tracked(channel):
            return None  # no longer watched: its cursor just stays
        return channel

    async def _read_back(self, client: discord.Client, channel: discord.abc.Messageable,
                         after: int) -> int:
        count = 0
        async for message in channel.history(after=discord.Object(after), oldest_first=True,
                                             limit=self.settings.catch_up_max_per_channel):
            await self.messages.on_message(client, message, read_back=True)
            count += 1
        return count
