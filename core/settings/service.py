"""`ChatSettings`: the settings admins set in chat, held in memory, changed through the store.

Three layers (see DESIGN): the config file gives defaults and hard bounds, chat settings
narrow them per server, chat or channel, each request may narrow further. Every process
reads all chat settings once at start-up and keeps them in memory, so a message costs a
dictionary lookup and no database read; a change made here is in memory at once, and with
the redis backend every other process re-reads the changed scope when told over Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from core.config import Config
from core.errors import SettingRefused
from core.settings.keys import chat_settings_allowed, check, clamp
from core.settings.propagate import RedisPropagation
from core.storage.chat_settings import (
    AuditRow,
    Scope,
    SettingRow,
    SettingsStore,
    StaleRevision,
)
from core.storage.chat_settings import Change as Change  # what adapters build changes from

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScopeSettings:
    """One server's or chat's settings as stored (unclamped) and its revision."""

    platform: str
    chat_id: str
    revision: int = 0
    values: Mapping[tuple[str, str], Any] = field(default_factory=dict)  # (channel, key)

    def raw(self, key: str, channel_id: str = "") -> Any:
        return self.values.get((channel_id, key))

    def channels(self, key: str) -> dict[str, Any]:
        """Channel id -> value of a per-channel key."""
        return {ch: v for (ch, k), v in self.values.items() if k == key and ch}


def _scope(platform: str, chat_id: str, revision: int, rows: list[SettingRow]) -> ScopeSettings:
    return ScopeSettings(platform, chat_id, revision,
                         MappingProxyType({(r.channel_id, r.key): r.value for r in rows}))


class ChatSettings:
    """The chat settings of every server and chat, for the adapters' hot paths and panels."""

    def __init__(self, config: Config, store: SettingsStore) -> None:
        self.config = config
        self.store = store
        self._scopes: dict[Scope, ScopeSettings] = {}
        self.propagation: RedisPropagation | None = None
        if config.jobs.backend == "redis":
            self.propagation = RedisPropagation(config.jobs.redis_url, self.reload,
                                                self.reload_all)

    async def start(self) -> None:
        """Read every setting (once), then follow other processes' changes."""
        await self.reload_all()
        if self.propagation is not None:
            await self.propagation.start()

    async def stop(self) -> None:
        if self.propagation is not None:
            await self.propagation.stop()

    async def reload_all(self) -> None:
        rows, revisions = await self.store.everything()
        by_scope: dict[Scope, list[SettingRow]] = {}
        for row in rows:
            by_scope.setdefault((row.platform, row.chat_id), []).append(row)
        self._scopes = {scope: _scope(*scope, revisions.get(scope, 0), found)
                        for scope, found in by_scope.items()}
        for scope, rev in revisions.items():  # scopes whose every setting went back to default
            self._scopes.setdefault(scope, ScopeSettings(*scope, rev))

    async def reload(self, platform: str, chat_id: str) -> None:
        """Re-read one scope (another process changed it)."""
        rows, revision = await self.store.scope(platform, chat_id)
        current = self._scopes.get((platform, chat_id))
        if current is None or current.revision <= revision:
            self._scopes[(platform, chat_id)] = _scope(platform, chat_id, revision, rows)

    # ----- the hot path: memory only ------------------------------------------------------
    def allowed(self, platform: str) -> bool:
        return chat_settings_allowed(self.config, platform)

    def of(self, platform: str, chat_id: int | str) -> ScopeSettings:
        """A server's or chat's settings; empty where none are set or the operator forbids."""
        if not self.allowed(platform):
            return ScopeSettings(platform, str(chat_id))
        return self._scopes.get((platform, str(chat_id))) or ScopeSettings(platform,
                                                                          str(chat_id))

    def scopes(self, platform: str) -> list[ScopeSettings]:
        """Every server or chat of `platform` with settings (none where forbidden)."""
        if not self.allowed(platform):
            return []
        return [scope for (p, _), scope in self._scopes.items() if p == platform]

    def get(self, platform: str, chat_id: int | str | None, key: str,
            channel_id: int | str = "") -> Any:
        """A setting within the config's current bounds; None where the config's default
        applies (not set, no server, or chat settings forbidden)."""
        if chat_id is None:
            return None
        value = self.of(platform, chat_id).raw(key, str(channel_id))
        return None if value is None else clamp(self.config, key, value)

    # ----- changes ---------------------------------------------------------------------------
    async def change(self, platform: str, chat_id: int | str, changes: list[Change], *,
                     who: str, revision: int | None) -> ScopeSettings:
        """Check and apply `changes` (all or none); the scope's settings after them.

        SettingRefused: forbidden by the operator, a value outside the config's bounds, or the
        scope no longer at `revision` (a stale panel). Nothing changes then.
        """
        if not self.allowed(platform):
            raise SettingRefused("chat settings are off", code="settings_off")
        checked = [Change(c.key, check(self.config, platform, c.key, c.value), c.channel_id)
                   for c in changes]
        try:
            await self.store.change(platform, str(chat_id), checked, who=who,
                                    expected_revision=revision)
        except StaleRevision:
            await self.reload(platform, str(chat_id))
            raise SettingRefused("the settings changed meanwhile", code="setting_stale") \
                from None
        await self.reload(platform, str(chat_id))
        if self.propagation is not None:
            await self.propagation.publish(platform, str(chat_id))
        return self.of(platform, chat_id)

    async def audit(self, platform: str, chat_id: int | str, limit: int = 100) -> list[AuditRow]:
        return await self.store.audit(platform, str(chat_id), limit)
