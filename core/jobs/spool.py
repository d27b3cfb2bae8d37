"""The image spool: each accepted image job's picture, kept until the job ends.

After a crash the engine rebuilds the job from its request row plus its spooled
picture; text jobs need no spool, their row holds the caption or prompt. One process
keeps pictures as files (`<data_dir>/spool/<request id>.png`); with several processes
(the redis backend) they live in the database, where workers on other machines read them.
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Protocol

from PIL import Image

from core.files import write_atomically
from core.intake.decode import DecodedImage
from core.records import RequestRecord
from core.storage.blobs import BlobStore

logger = logging.getLogger(__name__)


class Spool(Protocol):
    """Where accepted pictures wait for their job."""

    async def write(self, request_id: str, image: DecodedImage) -> None: ...

    async def read(self, record: RequestRecord) -> DecodedImage | None:
        """The spooled picture of a request, or None if it is gone or unreadable."""

    async def delete(self, request_id: str) -> None: ...

    async def prune(self, keep: set[str]) -> int:
        """Forget pictures whose request is not in `keep`; returns how many went."""


def _png(image: DecodedImage) -> bytes:
    out = io.BytesIO()
    image.image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _decoded(data: bytes, record: RequestRecord) -> DecodedImage | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, ValueError) as exc:
        logger.warning("spooled image of %s is unusable: %s", record.id, exc)
        return None
    return DecodedImage(image=rgb, sha256=record.image_sha256 or "", format="PNG",
                        width=rgb.width, height=rgb.height)


class FileSpool:
    """PNG files under one folder, keyed by request id (one process)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, request_id: str) -> Path:
        return self.root / f"{request_id}.png"

    async def write(self, request_id: str, image: DecodedImage) -> None:
        data = await asyncio.to_thread(_png, image)
        await asyncio.to_thread(self._write, request_id, data)

    def _write(self, request_id: str, data: bytes) -> None:
        """Whole or absent, and on disk before the row says "queued"."""
        write_atomically(self.path(request_id), data, durable=True)

    async def read(self, record: RequestRecord) -> DecodedImage | None:
        try:
            data = await asyncio.to_thread(self.path(record.id).read_bytes)
        except OSError as exc:
            logger.warning("spooled image of %s is gone: %s", record.id, exc)
            return None
        return await asyncio.to_thread(_decoded, data, record)

    async def delete(self, request_id: str) -> None:
        self.path(request_id).unlink(missing_ok=True)

    async def prune(self, keep: set[str]) -> int:
        return await asyncio.to_thread(self._prune, keep)

    def _prune(self, keep: set[str]) -> int:
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.iterdir():
            if path.is_file() and path.stem not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


class DatabaseSpool:
    """Pictures in the request log's database (several processes, several machines)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def write(self, request_id: str, image: DecodedImage) -> None:
        await self.blobs.put_picture(request_id, await asyncio.to_thread(_png, image))

    async def read(self, record: RequestRecord) -> DecodedImage | None:
        data = await self.blobs.get_picture(record.id)
        if data is None:
            logger.warning("spooled image of %s is gone", record.id)
            return None
        return await asyncio.to_thread(_decoded, data, record)

    async def delete(self, request_id: str) -> None:
        await self.blobs.delete_picture(request_id)

    async def prune(self, keep: set[str]) -> int:
        gone = [rid for rid in await self.blobs.picture_ids() if rid not in keep]
        for request_id in gone:
            await self.blobs.delete_picture(request_id)
        return len(gone)
