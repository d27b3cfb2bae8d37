"""The clip cache over the request log, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.jobs.cache import ClipCache, cache_key
from core.options import GenerationOptions
from core.storage.request_log import RequestLog

RATE = 16_000


def tone(hz: float) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(RATE) / RATE).astype(np.float32)


@pytest.mark.parametrize("shared", [False, True], ids=["one-process", "shared"])
async def test_a_job_run_again_after_a_crash_stores_its_clip_again(
        log_url: str, tmp_path: Path, shared: bool) -> None:
    """Killed after its clip was indexed but before its row was settled, a job runs again
    (after the restart, or on another worker): its second clip replaces the first."""
    request_log = await RequestLog.open(log_url)
    try:
        key = cache_key(model_tag="m", options=GenerationOptions(), prompt="hum", seed=1)
        killed = ClipCache(request_log, tmp_path / "w1", 10**9, shared=shared)
        await killed.start()
        files, duration = killed.write("job1", tone(220), RATE)
        await killed.add(clip_id="job1", key=key, caption="first", prompt="hum", seed=1,
                         duration_s=duration, files=files)

        again = ClipCache(request_log, tmp_path / ("w0" if shared else "w1"), 10**9,
                          shared=shared)
        await again.start()
        files, duration = again.write("job1", tone(440), RATE)
        await again.add(clip_id="job1", key=key, caption="second", prompt="hum", seed=1,
                        duration_s=duration, files=files)

        hit = await again.lookup(key)
        assert hit is not None and (hit.clip_id, hit.caption) == ("job1", "second")
        assert hit.files["ogg"].read_bytes() == files["ogg"].read_bytes()
        assert await request_log.clips.total_bytes() == sum(
            p.stat().st_size for p in files.values())
        if shared:  # what another machine fetches is the second clip too
            assert (await request_log.clips.get_bytes("job1"))["ogg"] == \
                files["ogg"].read_bytes()
    finally:
        await request_log.close()
