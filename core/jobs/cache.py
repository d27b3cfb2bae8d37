"""The clip cache: encoded clips on disk under `<data_dir>/cache`, indexed in the request log DB.

Every finished clip is written here once (`<clip_id>.ogg` + `<clip_id>.mp3`), and
`JobResult.files` points at these files. A clip with a cache key can be served
again to an identical request; the total size is capped at `[jobs] cache_max_mb`,
least recently used first. A clip used in the last `keep_recent_s` seconds
(default 10 min) is never evicted, so the files an adapter was just handed stay
valid while it uploads them, even with the cache disabled (`cache_max_mb = 0`:
nothing is served from the cache and clips are removed after that grace time).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.audio.encode import channel_count, prepare_clip, write_clip
from core.config import Config
from core.files import write_atomically
from core.options import GenerationOptions
from core.storage.blobs import ClipIndex
from core.storage.request_log import RequestLog

logger = logging.getLogger(__name__)

CLIP_FORMATS = ("ogg", "mp3")
# Telegram voice notes are mono: a stereo clip also gets a mono OGG/Opus under this key.
VOICE_FORMAT = "voice"


@dataclass(frozen=True)
class CachedClip:
    """A stored clip, ready to be handed out as a `JobResult`."""

    clip_id: str
    caption: str
    prompt: str
    seed: int
    duration_s: float
    files: dict[str, Path]


def cache_key(*, model_tag: str, options: GenerationOptions, image_sha256: str | None = None,
              caption: str | None = None, prompt: str | None = None,
              seed: int | str = "auto", video: list[object] | None = None) -> str:
    """Key of a request's clip: what went in, the options, the seed (or "auto") and the models.

    `video`: a moving picture's part — its file's hash, its length in ms, how many frames
    were captioned and the cap on the MP4 (a different cap may make a different MP4) — added
    to the key of its caption or words, or standing for the picture when it is captioned.
    """
    if video is not None:
        source: list[object] = ["video", *video]
        if caption is not None:
            source += ["caption", caption]
        elif prompt is not None:
            source += ["prompt", prompt]
    elif image_sha256 is not None:
        source = ["image", image_sha256]
    elif caption is not None:
        source = ["caption", caption]
    elif prompt is not None:
        source = ["prompt", prompt]
    else:
        raise ValueError("a cache key needs an image hash, a caption or a prompt")
    blob = json.dumps({"src": source, "opt": options.to_dict(), "seed": seed, "m": model_tag},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def clip_cache(config: Config, request_log: RequestLog, *, shared: bool,
               clock: Callable[[], float] = time.time) -> ClipCache:
    """A process's clip cache: `<data_dir>/cache`, capped at `[jobs] cache_max_mb`."""
    return ClipCache(request_log, config.data_dir / "cache",
                     int(config.jobs.cache_max_mb * 1_000_000), clock=clock, shared=shared)


class ClipCache:
    """Clip files plus their index rows; evicts least recently used beyond the size cap.

    `shared`: several processes use one request log (the redis backend), on machines that
    share nothing else — so each clip's bytes are kept in the database too, and the files
    under `root` are this process's copies, fetched from the database when missing.
    """

    def __init__(self, request_log: RequestLog, root: Path, max_bytes: int, *,
                 keep_recent_s: float = 600.0, clock: Callable[[], float] = time.time,
                 shared: bool = False) -> None:
        self._request_log = request_log
        self.root = Path(root)
        self.max_bytes = max(0, int(max_bytes))
        self.keep_recent_s = keep_recent_s
        self.shared = shared
        self._clock = clock
        # For the metrics (read when scraped): lookups by result, clips evicted, and the
        # cache's size as last counted.
        self.lookups: Counter[str] = Counter()
        self.evictions = 0
        self.size_bytes: int | None = None

    @property
    def index(self) -> ClipIndex:
        return self._request_log.clips

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    async def start(self) -> None:
        """Create the folder, drop files the index does not know (a crash mid-write), evict."""
        self.root.mkdir(parents=True, exist_ok=True)
        indexed = await self.index.all_files()
        known = {name for files in indexed for name in files.values()}
        for path in self.root.iterdir():
            if path.is_file() and path.name not in known:
                path.unlink(missing_ok=True)
        await self.evict()

    async def lookup(self, key: str) -> CachedClip | None:
        """The clip stored for `key`, if caching is on and its files are still there."""
        if not self.enabled:
            return None
        row = await self.index.lookup(key)
        if row is None:
            self.lookups["miss"] += 1
            return None
        files = await self.local_files(row["files"])
        if files is None:
            logger.warning("cached clip %s lost its files; dropping it", row["clip_id"])
            await self.index.delete([row["clip_id"]])
            self.lookups["miss"] += 1
            return None
        await self.index.touch(row["clip_id"], self._clock())
        self.lookups["hit"] += 1
        return CachedClip(row["clip_id"], row["caption"], row["prompt"], row["seed"],
                          row["duration_s"], files)

    async def local_files(self, names: dict[str, str]) -> dict[str, Path] | None:
        """A clip's files on this machine, by format, from the names a row keeps (None when
        they are gone; shared: copied from the database first if need be)."""
        # Rows written before names were kept hold whole paths: their last part is the name.
        files = {fmt: self.root / Path(name).name for fmt, name in names.items()}
        if not files:
            return None
        missing = [fmt for fmt, path in files.items() if not path.is_file()]
        if missing and self.shared:
            clip_id = Path(next(iter(files.values()))).name.split(".", 1)[0]
            stored = await self.index.get_bytes(clip_id)
            if all(fmt in stored for fmt in missing):
                await asyncio.to_thread(self._copy_in, {fmt: (files[fmt], stored[fmt])
                                                        for fmt in missing})
                missing = []
        return None if missing else files

    def _copy_in(self, blobs: dict[str, tuple[Path, bytes]]) -> None:
        for path, data in blobs.values():
            write_atomically(path, data)  # two tasks may fetch the same clip at once

    def write(self, clip_id: str, audio: np.ndarray, rate: int) -> tuple[dict[str, Path], float]:
        """Encode one clip in every served format (blocking: call it in a thread)."""
        self.root.mkdir(parents=True, exist_ok=True)
        clip = prepare_clip(audio, rate)
        files: dict[str, Path] = {}
        duration = 0.0
        for fmt in CLIP_FORMATS:
            path = self.root / f"{clip_id}.{fmt}"
            duration = write_clip(clip, rate, path, fmt, prepare=False)
            files[fmt] = path
        if channel_count(clip) > 1:
            path = self.root / f"{clip_id}.{VOICE_FORMAT}.ogg"
            # Downmixed from the source, then normalised: a mono sum of a prepared stereo clip
            # would lose level wherever the channels differ.
            write_clip(audio, rate, path, "ogg", mono=True)
            files[VOICE_FORMAT] = path
        return files, duration

    async def add(self, *, clip_id: str, key: str | None, caption: str, prompt: str, seed: int,
                  duration_s: float, files: dict[str, Path]) -> CachedClip:
        """Index a written clip (servable again under `key` when caching is on), then evict."""
        now = self._clock()
        size = sum(p.stat().st_size for p in files.values() if p.exists())
        if self.shared:
            data = await asyncio.to_thread(lambda: {f: p.read_bytes() for f, p in files.items()})
            await self.index.put_bytes(clip_id, data)
        await self.index.put({
            "clip_id": clip_id, "key": key if self.enabled else None, "caption": caption,
            "prompt": prompt, "seed": seed, "duration_s": duration_s,
            "files": {fmt: p.name for fmt, p in files.items()}, "size_bytes": size,
            "created_at": now, "last_used_at": now,
        })
        await self.evict()
        return CachedClip(clip_id, caption, prompt, seed, duration_s, dict(files))

    async def evict(self) -> int:
        """Remove least recently used clips until under the cap; returns how many went."""
        total = await self.index.total_bytes()
        removed = 0
        cutoff = self._clock() - self.keep_recent_s
        while total > self.max_bytes:
            rows = await self.index.oldest(cutoff)
            if not rows:
                break  # the rest is protected; it becomes evictable later
            gone: list[str] = []
            for row in rows:
                if total <= self.max_bytes:
                    break
                for name in row["files"].values():
                    (self.root / name).unlink(missing_ok=True)
                total -= row["size_bytes"]
                gone.append(row["clip_id"])
            await self.index.delete(gone)
            removed += len(gone)
        self.evictions += removed
        self.size_bytes = total
        return removed

