"""The image spool: each accepted image job's picture on disk until the job ends.

After a crash the engine rebuilds the job from its request row plus its spooled
image (`<data_dir>/spool/<request id>.png`); text jobs need no spool, their row
holds the caption or prompt.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from PIL import Image

from core.intake.decode import DecodedImage
from core.storage.records import RequestRecord

logger = logging.getLogger(__name__)


class Spool:
    """PNG copies of queued images, keyed by request id."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, request_id: str) -> Path:
        return self.root / f"{request_id}.png"

    def write(self, request_id: str, image: DecodedImage) -> Path:
        """Write atomically (blocking: call it in a thread)."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(request_id)
        fd, tmp = tempfile.mkstemp(prefix=f".{request_id}-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as fh:
                image.image.save(fh, format="PNG", compress_level=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def read(self, record: RequestRecord) -> DecodedImage | None:
        """The spooled image of a request, or None if it is gone or unreadable."""
        path = self.path(record.id)
        try:
            with Image.open(path) as img:
                img.load()
                rgb = img.convert("RGB")
        except (OSError, ValueError) as exc:
            logger.warning("spooled image of %s is unusable: %s", record.id, exc)
            return None
        return DecodedImage(image=rgb, sha256=record.image_sha256 or "", format="PNG",
                            width=rgb.width, height=rgb.height)

    def delete(self, request_id: str) -> None:
        self.path(request_id).unlink(missing_ok=True)

    def prune(self, keep: set[str]) -> int:
        """Delete spooled files whose request is not in `keep`; returns how many went."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.iterdir():
            if path.is_file() and path.stem not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
