"""The last message handled per channel (Discord): after a restart, what came since is read
back and answered (bot/discord/catch_up.py). The contract's `ChannelCursors`
(core/jobs/contract.py), kept in the request log."""

from __future__ import annotations

import time

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.storage.tables import cursors


class CursorTable:
    """Per-channel cursors of one request log."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def known(self, platform: str) -> list[tuple[str, str, bool]]:
        """(channel id, last id handled, private) of every channel seen on `platform`."""
        query = select(cursors.c.channel_id, cursors.c.last_id, cursors.c.is_private).where(
            cursors.c.platform == platform)
        async with self.db.connect() as conn:
            return [(str(c), str(last), bool(p)) for c, last, p in await conn.execute(query)]

    async def advance(self, platform: str, channel_id: str, last_id: str, *,
                      is_private: bool = False, only_new: bool = False) -> None:
        """Remember `last_id` as handled in a channel, unless a later id already is.

        Ids are compared as numbers (Discord's snowflakes grow with time). `only_new`: start
        a cursor for a channel that has none, leave an existing one where it is.
        """
        now = time.time()
        async with self.db.begin() as conn:
            current = (await conn.execute(select(cursors.c.last_id).where(
                cursors.c.platform == platform, cursors.c.channel_id == channel_id))).scalar()
            if current is None:
                try:
                    async with conn.begin_nested():
                        await conn.execute(insert(cursors).values(
                            platform=platform, channel_id=channel_id, last_id=last_id,
                            is_private=is_private, updated_at=now))
                    return
                except IntegrityError:  # another handler added it meanwhile
                    current = "0"
            if int(last_id) > int(current) and not only_new:
                await conn.execute(update(cursors).where(
                    cursors.c.platform == platform, cursors.c.channel_id == channel_id,
                    cursors.c.last_id == current)
                    .values(last_id=last_id, updated_at=now))
