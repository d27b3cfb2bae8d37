"""The chat settings' rows and their audit (tables `chat_settings`, `chat_settings_audit`).

A change is one transaction: the scope's revision is checked (a panel shown before another
change is stale), each row is written or deleted, and each change leaves an audit row
(old → new, who, when). The newest audit id of a server or chat is its revision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.errors import StorageUnavailable
from core.storage.tables import chat_settings, chat_settings_audit

Scope = tuple[str, str]  # (platform, server or chat id)


class StaleRevision(Exception):
    """The scope changed since the revision the caller saw; nothing was written."""

    def __init__(self, current: int) -> None:
        super().__init__(f"settings are at revision {current}")
        self.current = current


@dataclass(frozen=True)
class SettingRow:
    platform: str
    chat_id: str
    channel_id: str  # "" for the whole server or chat
    key: str
    value: Any
    updated_by: str
    updated_at: float


@dataclass(frozen=True)
class AuditRow:
    id: int
    platform: str
    chat_id: str
    channel_id: str
    key: str
    old_value: Any
    new_value: Any  # None: back to the config's default
    changed_by: str
    changed_at: float


@dataclass(frozen=True)
class Change:
    """One key of one scope set to `value` (None: removed, the config's default applies)."""

    key: str
    value: Any
    channel_id: str = ""


def _row(r: Any) -> SettingRow:
    return SettingRow(r.platform, r.chat_id, r.channel_id, r.key, r.value, r.updated_by,
                      r.updated_at)


class SettingsStore:
    """Reads and changes the chat settings in the request log's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def everything(self) -> tuple[list[SettingRow], dict[Scope, int]]:
        """Every row and every scope's revision (read once at start-up, then kept in memory)."""
        async with self.engine.connect() as conn:
            rows = [_row(r) for r in await conn.execute(select(chat_settings))]
            a = chat_settings_audit.c
            revs = await conn.execute(select(a.platform, a.chat_id, func.max(a.id))
                                      .group_by(a.platform, a.chat_id))
            return rows, {(p, c): int(rev) for p, c, rev in revs}

    async def scope(self, platform: str, chat_id: str) -> tuple[list[SettingRow], int]:
        """One server's or chat's rows and its revision."""
        async with self.engine.connect() as conn:
            s = chat_settings.c
            rows = [_row(r) for r in await conn.execute(
                select(chat_settings).where(s.platform == platform, s.chat_id == chat_id))]
            return rows, await _revision(conn, platform, chat_id)

    async def change(self, platform: str, chat_id: str, changes: list[Change], *, who: str,
                     expected_revision: int | None = None) -> int:
        """Apply `changes` at once; the scope's new revision. StaleRevision when the scope is
        no longer at `expected_revision` (then nothing is written)."""
        now = time.time()
        s = chat_settings.c
        try:
            async with self.engine.begin() as conn:
                current = await _revision(conn, platform, chat_id)
                if expected_revision is not None and current != expected_revision:
                    raise StaleRevision(current)
                for ch in changes:
                    where = (s.platform == platform, s.chat_id == chat_id,
                             s.channel_id == ch.channel_id, s.key == ch.key)
                    old = (await conn.execute(select(s.value).where(*where))).first()
                    old_value = old[0] if old is not None else None
                    if old_value == ch.value:
                        continue
                    if ch.value is None:
                        await conn.execute(delete(chat_settings).where(*where))
                    elif old is None:
                        await conn.execute(insert(chat_settings).values(
                            platform=platform, chat_id=chat_id, channel_id=ch.channel_id,
                            key=ch.key, value=ch.value, updated_by=who, updated_at=now))
                    else:
                        await conn.execute(update(chat_settings).where(*where).values(
                            value=ch.value, updated_by=who, updated_at=now))
                    await conn.execute(insert(chat_settings_audit).values(
                        platform=platform, chat_id=chat_id, channel_id=ch.channel_id,
                        key=ch.key, old_value=old_value, new_value=ch.value, changed_by=who,
                        changed_at=now))
                return await _revision(conn, platform, chat_id)
        except (DBAPIError, OSError) as exc:
            raise StorageUnavailable(f"the request log refused a write ({type(exc).__name__})"
                                     ) from None

    async def audit(self, platform: str, chat_id: str, limit: int = 100) -> list[AuditRow]:
        """The scope's changes, newest first."""
        a = chat_settings_audit.c
        async with self.engine.connect() as conn:
            found = await conn.execute(select(chat_settings_audit)
                                       .where(a.platform == platform, a.chat_id == chat_id)
                                       .order_by(a.id.desc()).limit(limit))
            return [AuditRow(r.id, r.platform, r.chat_id, r.channel_id, r.key, r.old_value,
                             r.new_value, r.changed_by, r.changed_at) for r in found]


async def _revision(conn: AsyncConnection, platform: str, chat_id: str) -> int:
    a = chat_settings_audit.c
    found = await conn.execute(select(func.max(a.id)).where(a.platform == platform,
                                                            a.chat_id == chat_id))
    return int(found.scalar() or 0)
