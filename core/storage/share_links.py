"""Share links of results: one unguessable, revocable link per shared request.

The token of a link is made and hashed here and leaves only as the return value of `create`:
the database holds its sha256, so neither a copy of the database nor a log of its rows
opens a link. A token has 192 random bits, so a hash without a salt is safe to look up by.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.records import SharedResult
from core.storage.tables import shares

TOKEN_BYTES = 24  # 32 URL-safe characters


def token_hash(token: str) -> str:
    """The stored form of a link's token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class ShareLinkTable:
    """The share links of requests (the web page's "Share" and "Stop sharing"): the
    contract's `ShareLinks` (core/jobs/contract.py), kept in the request log."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db

    async def create(self, request_id: str, preview: bytes | None = None) -> str:
        """A new link for `request_id`, replacing any earlier one; returns its token.

        One link per result: its owner can show it only while their browser remembers the
        token, so sharing again (say, from another device) makes a new link and ends the old.
        `preview` (a small JPEG) is kept with the link; None keeps the earlier link's one.
        """
        token = secrets.token_urlsafe(TOKEN_BYTES)
        async with self.db.begin() as conn:
            if preview is None:
                query = select(shares.c.preview).where(shares.c.request_id == request_id)
                found = (await conn.execute(query)).scalar()
                preview = bytes(found) if found is not None else None
            await conn.execute(shares.delete().where(shares.c.request_id == request_id))
            await conn.execute(insert(shares).values(token_hash=token_hash(token),
                                                     request_id=request_id,
                                                     created_at=time.time(), preview=preview))
        return token

    async def find(self, token: str) -> SharedResult | None:
        """The result a token opens, or None (never shared, or revoked)."""
        query = select(shares.c.request_id, shares.c.created_at, shares.c.preview).where(
            shares.c.token_hash == token_hash(token))
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        preview = bytes(row.preview) if row.preview is not None else None
        return SharedResult(str(row.request_id), float(row.created_at), preview)

    async def is_shared(self, request_id: str) -> bool:
        query = select(shares.c.token_hash).where(shares.c.request_id == request_id).limit(1)
        async with self.db.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def revoke(self, request_id: str) -> bool:
        """End every link of `request_id`; False when there was none."""
        async with self.db.begin() as conn:
            result = await conn.execute(shares.delete().where(
                shares.c.request_id == request_id))
        return bool(result.rowcount)
