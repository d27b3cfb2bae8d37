"""Moving pictures through the job engine: one captioner batch, the MP4 answer, rows, cache
keys, and a crash in the middle (the spooled bytes are decoded again)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.config import ImagesConfig, VideoConfig
from core.intake.decode import DecodedImage
from core.intake.moving import decode_upload
from core.jobs.events import Started
from tests.conftest import make_config
from tests.core.audio.test_video import probe
from tests.core.intake.video_fixtures import animation, encode_video
from tests.core.jobs.engine_support import (
    WrappedPipeline,
    gated_engine,
    image_request,
    picture,
    restarted_engine,
    running_engine,
    wait_for,
)


def clip_of(data: bytes) -> DecodedImage:
    return decode_upload(data, ImagesConfig(), VideoConfig())


class CountingCaptioner(WrappedPipeline):
    """The tiny pipeline, counting how many images each captioner call gets."""

    def __init__(self, inner: Any, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        self.caption_calls: list[int] = []
        original = inner.captions

        def captions(images: Sequence[Any]) -> list[str]:
            self.caption_calls.append(len(images))
            return list(original(images))

        inner.captions = captions


def check_mp4(path: Path, frames: int, seconds: float) -> None:
    seen = probe(path.read_bytes())
    assert len(seen.frame_times) == frames
    assert abs(seen.video_seconds - seconds) <= 0.1
    assert abs(seen.audio_seconds - seen.video_seconds) <= 0.1


async def test_videos_and_a_picture_share_one_caption_call_and_get_mp4s(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path, jobs={"max_batch": 4, "max_wait_ms": 500})
    pipe = CountingCaptioner(tiny_pipeline)
    gif = animation("GIF", [100] * 12)  # 1.2 s
    mp4 = encode_video(frames=18, rate=15)  # 1.2 s: same length, so one diffusion call
    async with running_engine(cfg, pipe) as engine:
        # The picture asks for the clips' length: all three can share one model call.
        handles = [await engine.submit(image_request(cfg, user, image, seed=5, seconds=1.2))
                   for user, image in (("ann", clip_of(gif)), ("bob", clip_of(mp4)),
                                       ("cid", picture(1)))]
        results = [await asyncio.wait_for(h.result(), 60) for h in handles]
        rows = [await engine.get_request(h.id) for h in handles]
        # The same GIF again: a cache hit, with its MP4.
        again = await engine.submit(image_request(cfg, "dan", clip_of(gif), seed=5))
        hit = await asyncio.wait_for(again.result(), 30)
    assert pipe.calls == [3]  # one model call: equal lengths batch together…
    assert pipe.caption_calls == [3 + 3 + 1]  # …and one caption call: 3 frames per clip
    check_mp4(results[0].files["mp4"], 12, 1.2)
    check_mp4(results[1].files["mp4"], 18, 1.2)
    assert "mp4" not in results[2].files and results[2].output_kind == "audio"
    assert [(r.input_kind, r.output_kind) for r in rows if r] == [
        ("animation", "video"), ("video", "video"), ("photo", "audio")]
    assert rows[0] is not None and rows[0].image_sha256 == hashlib.sha256(gif).hexdigest()
    assert rows[1] is not None and rows[1].input_seconds is not None
    assert abs(rows[1].input_seconds - 1.2) < 0.01
    assert all(r is not None and r.options and r.options["seconds"] == 1.2 for r in rows[:2])
    assert len({r.cache_key for r in rows if r}) == 3
    assert hit.cache_hit and hit.files["mp4"] == results[0].files["mp4"]
    assert (hit.output_kind, hit.sound_fit) == ("video", "whole")


async def test_a_video_cut_short_by_a_crash_is_decoded_again_from_its_spooled_bytes(
        tmp_path: Path, tiny_pipeline: Any) -> None:
    cfg = make_config(tmp_path)
    data = encode_video(frames=15, rate=15)
    request_log, engine, gate = await gated_engine(cfg, tiny_pipeline)
    handle = await engine.submit(image_request(cfg, "ann", clip_of(data), seed=9))
    await wait_for(handle, Started)
    spooled = cfg.data_dir / "spool" / f"{handle.id}.video"
    assert spooled.read_bytes() == data  # the original bytes, not a frame
    await engine.stop(0.1)
    gate.set()
    await request_log.close()

    request_log, engine, handed, resumed = await restarted_engine(cfg, tiny_pipeline)
    try:
        assert resumed == 1
        result = await asyncio.wait_for(handed[0].result(), 60)
        record = await engine.get_request(handle.id)
    finally:
        await engine.stop(5)
        await request_log.close()
    check_mp4(result.files["mp4"], 15, 1.0)
    assert record is not None and (record.status, record.output_kind) == ("done", "video")
    assert not spooled.exists()  # dropped once answered
