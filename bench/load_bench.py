"""Load benchmark of the job engine: K simulated users, max_batch=1 versus the configured batch.

    .venv/bin/python bench/load_bench.py --users 8 --jobs 4

Each user submits a picture, waits for the clip, and submits the next one (no
think time). Every job has its own picture and seed, so nothing comes from the
cache. Both runs share one loaded pipeline (tiny random models by default), warmed
up first. Printed per run: throughput, p50/p95 latency (submit -> clip on disk),
the share of wall time the models were busy and the share spent outside them
(engine overhead: queueing, batching waits, encoding, the log), and the batch sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import Config, ImagesConfig, parse_config
from core.intake.decode import DecodedImage, decode_image
from core.jobs.local import local_engine
from core.jobs.request import JobRequest
from core.options import GenerationOptions
from core.stats.collect import percentile
from core.storage.request_log import RequestLog


def make_config(data_dir: Path, args: argparse.Namespace, max_batch: int) -> Config:
    return parse_config({
        "models": {"preset": args.preset, "device": args.device, "cache_dir": args.cache_dir},
        "generation": {"seconds": args.seconds, "steps": args.steps, "caption_beams": 2,
                       "caption_max_tokens": 8},
        "jobs": {"max_batch": max_batch, "max_wait_ms": args.max_wait_ms,
                 "max_queue": 10_000, "per_user_concurrent": 4,
                 "per_user_per_hour": 100_000, "cache_max_mb": 0},
        "storage": {"data_dir": str(data_dir)},
    }, source="load bench", environ={})


def picture(n: int) -> DecodedImage:
    pixels = np.random.default_rng(n).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    return decode_image(buf.getvalue(), ImagesConfig())


async def run_once(pipeline: object, args: argparse.Namespace, max_batch: int,
                   root: Path) -> dict[str, object]:
    cfg = make_config(root / f"batch{max_batch}", args, max_batch)
    log = await RequestLog.open(cfg.database_url)
    engine = local_engine(cfg, log, pipeline_factory=lambda: pipeline)
    await engine.start()
    options = GenerationOptions.from_config(cfg.generation)
    pictures = [picture(1000 * max_batch + i) for i in range(args.users * args.jobs)]
    latencies: list[float] = []

    async def user(u: int) -> None:
        for j in range(args.jobs):
            n = u * args.jobs + j
            request = JobRequest(platform="web", user_id=f"user{u}", chat_id=f"c{u}",
                                 source_kind="photo", options=options, image=pictures[n],
                                 seed=n)
            started = time.perf_counter()
            handle = await engine.submit(request)
            await handle.result()
            latencies.append(time.perf_counter() - started)

    busy_before = engine.transport.runner.model_busy_s
    started = time.perf_counter()
    await asyncio.gather(*(user(u) for u in range(args.users)))
    wall = time.perf_counter() - started
    busy = engine.transport.runner.model_busy_s - busy_before
    await engine.stop(30)
    parts = await log.rows_since(0, ["queue_wait_s", "caption_s", "sound_s", "encode_s",
                                     "total_s"])
    await log.close()
    mean = {name: statistics.fmean(row[i] for row in parts)
            for i, name in enumerate(("wait", "caption", "sound", "encode", "total"))}
    return {"max_batch": max_batch, "jobs": len(latencies), "wall_s": wall,
            "throughput": len(latencies) / wall, "p50_s": percentile(latencies, 50),
            "p95_s": percentile(latencies, 95), "model_share": busy / wall,
            "mean_batch": statistics.fmean(engine.transport.batches), "per_job": mean,
            "batches": dict(sorted(Counter(engine.transport.batches).items()))}


async def main(args: argparse.Namespace) -> None:
    from core.models.loading import ModelLoader
    from core.models.pipeline import PipelineInput

    with tempfile.TemporaryDirectory(prefix="sonify-bench-") as tmp:
        root = Path(tmp)
        cfg = make_config(root / "load", args, 1)
        t0 = time.perf_counter()
        pipeline = ModelLoader(cfg).pipeline()
        warm = GenerationOptions.from_config(cfg.generation)
        for n in (1, max(2, args.max_batch)):  # first calls pay one-off setup costs
            pipeline.run([PipelineInput(image=picture(999_999 - i).image, seed=i)
                          for i in range(n)], warm)
        print(f"models ready in {time.perf_counter() - t0:.1f} s ({args.preset}, "
              f"{args.device}); {args.users} users x {args.jobs} jobs, {args.seconds:g} s clips,"
              f" {args.steps} steps, max_wait_ms={args.max_wait_ms}, "
              f"torch threads={_torch_threads()}, cpus={os.cpu_count()}")
        rows = [await run_once(pipeline, args, mb, root) for mb in (1, args.max_batch)]
    print(f"{'max_batch':>9} {'jobs':>5} {'wall s':>7} {'jobs/s':>7} {'p50 s':>6} {'p95 s':>6} "
          f"{'models':>7} {'outside':>7} {'mean batch':>10}  batch sizes")
    for r in rows:
        print(f"{r['max_batch']:>9} {r['jobs']:>5} {r['wall_s']:>7.2f} {r['throughput']:>7.2f} "
              f"{r['p50_s']:>6.2f} {r['p95_s']:>6.2f} {r['model_share']:>7.0%} "
              f"{1 - r['model_share']:>7.0%} {r['mean_batch']:>10.2f}  {r['batches']}")
    print("per job, mean seconds (from the request log): queue wait | caption + sound (the "
          "batch's model time) | encode | total")
    for r in rows:
        m = r["per_job"]
        print(f"{r['max_batch']:>9}  {m['wait']:.3f} | {m['caption'] + m['sound']:.3f} | "
              f"{m['encode']:.3f} | {m['total']:.3f}")
    base, batched = rows
    print(f"throughput x{batched['throughput'] / base['throughput']:.2f} with "
          f"max_batch={args.max_batch}")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=8, help="concurrent simulated users (K)")
    p.add_argument("--jobs", type=int, default=4, help="jobs per user")
    p.add_argument("--max-batch", type=int, default=4, help="the batched run's max_batch")
    p.add_argument("--max-wait-ms", type=int, default=150)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--preset", default="tiny", choices=("tiny", "default"))
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--cache-dir", default=os.environ.get(
        "SONIFY_TEST_CACHE", str(Path.home() / ".cache" / "sonify-tests")))
    return p.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    asyncio.run(main(parse_args()))
