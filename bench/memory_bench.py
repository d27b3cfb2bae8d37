"""Memory benchmark: the resident memory a `sonify run` process needs for its models.

Usage: .venv/bin/python bench/memory_bench.py [--preset real-random|tiny]
       [--backend audioldm|stable-audio-3] [--dtype fp32|bf16] [--batch N] [--steps K]

Prints the process's resident memory (RSS) after importing the libraries, after building
the models, and its peak while answering one picture and then a batch of N pictures (the
engine's `[jobs] max_batch`, 4 by default), on the CPU. `real-random` builds the default
architectures at full size with random weights (bench/real_size.py): the same tensors as the
trained weights, so the same memory. The peak does not depend on the number of diffusion
steps (each step reuses the same buffers), so the default is 4 steps to keep the run short;
captions are decoded at the bot's defaults (6 beams, 30 tokens), 5 s clips.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as core/models/__init__.py, before torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 1024**3


def resident() -> float:
    """This process's resident memory now, in GiB (Linux: /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / GIB
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def peak() -> float:
    """This process's peak resident memory so far, in GiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def report(moment: str) -> None:
    print(f"{moment:<34} {resident():6.2f} GiB now {peak():6.2f} GiB peak", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", choices=("real-random", "tiny"), default="real-random")
    ap.add_argument("--backend", choices=("audioldm", "stable-audio-3"), default="audioldm")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--batch", type=int, default=4, help="pictures in the batch (default 4)")
    ap.add_argument("--steps", type=int, default=4, help="diffusion steps (default 4)")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.steps < 1:
        ap.error("--batch and --steps must be at least 1")
    started = time.perf_counter()
    print(f"Sonify memory benchmark: preset {args.preset}, {args.backend}, {args.dtype} on the "
          f"CPU, captions 6 beams x 30 tokens, 5 s clips, {args.steps} steps")
    report("start")

    from pipeline_bench import bench_config, build_captioner, build_generator, pictures

    from core.models.pipeline import Pipeline, PipelineInput
    from core.models.precision import choose_precision
    from core.options import GenerationOptions

    report("libraries imported")
    options = argparse.Namespace(
        preset=args.preset, device="cpu", dtype=args.dtype, beams=6, max_tokens=30,
        seconds=5.0, scheduler="dpm", candidates=1, steps=args.steps, backend=[args.backend])
    precision = choose_precision("cpu", args.dtype, test_models=args.preset == "tiny")
    config = bench_config(args.backend, options)
    captioner = build_captioner(options, precision)
    generator = build_generator(args.backend, options, config, precision)
    report("models built")
    pipeline = Pipeline(captioner, generator, prompt_template=config.generation.prompt_template)
    generation = GenerationOptions.from_config(config.generation)
    images = pictures(args.batch)
    pipeline.run([PipelineInput(image=images[0], seed=0)], generation)
    report("one picture answered")
    pipeline.run([PipelineInput(image=image, seed=n) for n, image in enumerate(images)],
                 generation)
    report(f"a batch of {args.batch} answered")
    print(f"took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
