"""What several processes must all see, kept in the database beside the request log: the
clip cache's index and clip bytes, the pictures of queued jobs, the service's keys."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.storage.tables import clip_files, clips, pictures, service_keys


class ClipIndex:
    """The clip cache's index: which clip answers which key, its files, when it was used."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def put(self, values: dict[str, Any]) -> None:
        """Add a clip; a keyed clip replaces the key of any older clip with that key.

        A clip of the same id replaces the earlier one: a job run again after a crash (its
        clip indexed, its row not yet settled) writes its clip again.
        """
        async with self.db.begin() as conn:
            await conn.execute(clips.delete().where(clips.c.clip_id == values["clip_id"]))
            if values.get("key"):
                await conn.execute(update(clips).where(clips.c.key == values["key"])
                                   .values(key=None))
            await conn.execute(insert(clips).values(**values))

    async def lookup(self, key: str) -> dict[str, Any] | None:
        query = select(clips).where(clips.c.key == key).order_by(clips.c.created_at.desc())
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        return dict(row._mapping) if row else None

    async def touch(self, clip_id: str, when: float | None = None) -> None:
        async with self.db.begin() as conn:
            await conn.execute(update(clips).where(clips.c.clip_id == clip_id)
                               .values(last_used_at=time.time() if when is None else when))

    async def total_bytes(self) -> int:
        async with self.db.connect() as conn:
            return int((await conn.execute(select(func.sum(clips.c.size_bytes)))).scalar() or 0)

    async def oldest(self, used_before: float, limit: int = 100) -> list[dict[str, Any]]:
        """Least recently used clips not used since `used_before`, oldest first."""
        query = (select(clips).where(clips.c.last_used_at < used_before)
                 .order_by(clips.c.last_used_at).limit(limit))
        async with self.db.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def all_files(self) -> list[dict[str, str]]:
        async with self.db.connect() as conn:
            return [r[0] for r in await conn.execute(select(clips.c.files))]

    async def delete(self, clip_ids: Sequence[str]) -> None:
        if not clip_ids:
            return
        async with self.db.begin() as conn:
            await conn.execute(clips.delete().where(clips.c.clip_id.in_(list(clip_ids))))
            await conn.execute(clip_files.delete().where(
                clip_files.c.clip_id.in_(list(clip_ids))))

    async def put_bytes(self, clip_id: str, data: dict[str, bytes]) -> None:
        """A clip's encoded files, for processes on other machines (the redis backend)."""
        async with self.db.begin() as conn:
            await conn.execute(clip_files.delete().where(clip_files.c.clip_id == clip_id))
            for fmt, blob in data.items():
                await conn.execute(insert(clip_files).values(clip_id=clip_id, fmt=fmt,
                                                             data=blob))

    async def get_bytes(self, clip_id: str) -> dict[str, bytes]:
        query = select(clip_files.c.fmt, clip_files.c.data).where(
            clip_files.c.clip_id == clip_id)
        async with self.db.connect() as conn:
            return {str(fmt): bytes(data) for fmt, data in await conn.execute(query)}


class BlobStore:
    """The pictures of queued jobs (for workers that may run on other machines) and the
    service's random keys."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def put_picture(self, request_id: str, png: bytes) -> None:
        async with self.db.begin() as conn:
            await conn.execute(pictures.delete().where(pictures.c.request_id == request_id))
            await conn.execute(insert(pictures).values(request_id=request_id, png=png,
                                                       created_at=time.time()))

    async def get_picture(self, request_id: str) -> bytes | None:
        query = select(pictures.c.png).where(pictures.c.request_id == request_id)
        async with self.db.connect() as conn:
            value = (await conn.execute(query)).scalar()
        return bytes(value) if value is not None else None

    async def delete_picture(self, request_id: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(pictures.delete().where(pictures.c.request_id == request_id))

    async def picture_ids(self) -> list[str]:
        async with self.db.connect() as conn:
            return [str(r[0]) for r in await conn.execute(select(pictures.c.request_id))]

    async def service_key(self, name: str, size: int = 32) -> bytes:
        """The random key `name`, made once by whichever process asks first."""
        query = select(service_keys.c.value).where(service_keys.c.name == name)
        async with self.db.begin() as conn:
            found = (await conn.execute(query)).scalar()
            if found is not None and len(found) >= size:
                return bytes(found)
        try:
            async with self.db.begin() as conn:
                await conn.execute(insert(service_keys).values(name=name,
                                                               value=secrets.token_bytes(size)))
        except IntegrityError:  # another process made it at the same moment: use theirs
            pass
        async with self.db.connect() as conn:
            return bytes((await conn.execute(query)).scalar_one())
