"""The image spool: each accepted image job's picture, kept until the job ends.

After a crash the engine rebuilds the job from its request row plus its spooled
picture; text jobs need no spool, their row holds the caption or prompt. One process
keeps pictures as files (`<data_dir>/spool/<request id>.png`); with several processes
(the redis backend) they live in the database, where workers on other machines read them.

A moving picture is spooled as the file's original bytes (`<request id>.video`), not as a
frame: the answer is made from them, and a resumed job decodes them again.
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Protocol

from PIL import Image

from core.config import VideoConfig
from core.errors import ImageRejected
from core.files import write_atomically
from core.intake.decode import DecodedImage
from core.records import MOVING_INPUTS, RequestRecord
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


def _bytes(image: DecodedImage) -> bytes:
    """What is spooled: a moving picture's own file, else the working image as a PNG."""
    if image.moving is not None:  # a MovingPicture: the file's own bytes
        data: bytes = getattr(image.moving, "data")  # noqa: B009 (typed loosely)
        return data
    out = io.BytesIO()
    image.image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _decoded(data: bytes, record: RequestRecord, video: VideoConfig) -> DecodedImage | None:
    if record.input_kind in MOVING_INPUTS:
        from core.intake.moving import decode_spooled  # PyAV: only where videos come back

        try:
            return decode_spooled(data, video)
        except ImageRejected as exc:
            logger.warning("spooled video of %s is unusable: %s", record.id, exc)
            return None
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

    def __init__(self, root: Path, video: VideoConfig | None = None) -> None:
        self.root = Path(root)
        self.video = video or VideoConfig()

    def path(self, request_id: str, *, moving: bool = False) -> Path:
        return self.root / f"{request_id}.{'video' if moving else 'png'}"

    async def write(self, request_id: str, image: DecodedImage) -> None:
        data = await asyncio.to_thread(_bytes, image)
        await asyncio.to_thread(self._write, self.path(request_id,
                                                       moving=image.moving is not None), data)

    def _write(self, path: Path, data: bytes) -> None:
        """Whole or absent, and on disk before the row says "queued"."""
        write_atomically(path, data, durable=True)

    async def read(self, record: RequestRecord) -> DecodedImage | None:
        path = self.path(record.id, moving=record.input_kind in MOVING_INPUTS)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            logger.warning("spooled image of %s is gone: %s", record.id, exc)
            return None
        return await asyncio.to_thread(_decoded, data, record, self.video)

    async def delete(self, request_id: str) -> None:
        self.path(request_id).unlink(missing_ok=True)
        self.path(request_id, moving=True).unlink(missing_ok=True)

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

    def __init__(self, blobs: BlobStore, video: VideoConfig | None = None) -> None:
        self.blobs = blobs
        self.video = video or VideoConfig()

    async def write(self, request_id: str, image: DecodedImage) -> None:
        await self.blobs.put_picture(request_id, await asyncio.to_thread(_bytes, image))

    async def read(self, record: RequestRecord) -> DecodedImage | None:
        data = await self.blobs.get_picture(record.id)
        if data is None:
            logger.warning("spooled image of %s is gone", record.id)
            return None
        return await asyncio.to_thread(_decoded, data, record, self.video)

    async def delete(self, request_id: str) -> None:
        await self.blobs.delete_picture(request_id)

    async def prune(self, keep: set[str]) -> int:
        gone = [rid for rid in await self.blobs.picture_ids() if rid not in keep]
        for request_id in gone:
            await self.blobs.delete_picture(request_id)
        return len(gone)
