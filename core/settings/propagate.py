"""With the redis backend, a settings change reaches every adapter process over Redis.

The process that made a change publishes which server or chat changed; each process
subscribed re-reads that scope from the database (the source of truth). A subscription
lost and regained may have missed messages, so after each (re)connection every scope is
re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

CHANNEL = "sonify:chat-settings"
RECONNECT_S = 1.0


class RedisPropagation:
    """Publishes this process's changes; calls `changed(platform, chat_id)` for every change
    any process publishes, and `resync()` after each (re)subscription."""

    def __init__(self, url: str, changed: Callable[[str, str], Awaitable[None]],
                 resync: Callable[[], Awaitable[None]]) -> None:
        self._redis = aioredis.Redis.from_url(url)
        self._changed, self._resync = changed, resync
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="chat-settings-propagation")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._redis.aclose()

    async def publish(self, platform: str, chat_id: str) -> None:
        """Tell every process; a Redis outage is logged (they resync when it is back)."""
        try:
            await self._redis.publish(CHANNEL, json.dumps([platform, chat_id]))
        except (RedisError, OSError) as exc:
            logger.warning("could not publish a settings change over Redis: %s", exc)

    async def _listen(self) -> None:
        synced_once = False
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    if synced_once:  # what was published while away is read back
                        await self._resync()
                    synced_once = True
                    self.subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        try:
                            platform, chat_id = json.loads(message["data"])
                            await self._changed(str(platform), str(chat_id))
                        except Exception:  # one bad message must not end the subscription
                            logger.exception("a settings change from Redis was not applied")
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                logger.warning("settings propagation over Redis lost (%s); retrying", exc)
                await asyncio.sleep(RECONNECT_S)
