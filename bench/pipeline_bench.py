"""Pipeline benchmark: each stage's time per picture against this machine's own limit.

Usage: .venv/bin/python bench/pipeline_bench.py --preset tiny|real-random [--n N]
       [--backend audioldm|audioldm2|stable-audio-3 ...] [--candidates K]
       [--device auto|cpu|cuda] [--dtype auto|fp32|bf16|fp16] [--seconds S] [--steps K]
       [--beams B] [--max-tokens T] [--caption-batches 1,4,8] [--threads T]

`tiny` loads the tiny random test models through the real loading code (ModelLoader).
`real-random` builds the real ARCHITECTURES at full size with random weights (no download,
bench/real_size.py), so its timings are honest for the real models' size (not their output).

The run first measures the machine (matmul peak in fp32 and bf16, the rate a few-row matmul
streams weights), then the caption stage by batch size and one decoder step by length
(bench/caption_speed.py), then each backend at its own defaults (steps, guidance) unless
--steps is given: the first picture after loading, later pictures one by one, and N pictures
as one batch, per stage, with each stage's FLOPs, weight bytes read and time against its
roofline bound (bench/roofline.py). A summary side by side ends it.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as core/models/__init__.py, before torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from caption_speed import print_caption_speed
from PIL import Image, ImageDraw
from real_size import REAL_SIZE, SEED, real_size_captioner, real_size_clap
from roofline import ROOFLINE_HEADER, Limits, Work, counting, header_lines, measure_limits
from roofline import roofline_cells as cells

from core.audio.encode import encode_clip
from core.config import Config, parse_config
from core.models.captioner import Captioner
from core.models.clap import Scorer
from core.models.hub import quiet_construction
from core.models.loading import ModelLoader
from core.models.pipeline import Pipeline, PipelineInput, PipelineResult
from core.models.precision import Precision, choose_precision, dtype_name
from core.models.sound import SoundGenerator, auto_candidates, sound_dtype
from core.options import GenerationOptions

STAGES = ("caption", "sound", "encode", "total")


def bench_config(backend: str, args: argparse.Namespace) -> Config:
    """The configuration a backend runs under here: its own step and guidance defaults."""
    generation: dict[str, Any] = {
        "caption_beams": args.beams, "caption_max_tokens": args.max_tokens,
        "seconds": args.seconds, "scheduler": args.scheduler, "negative_prompt": "low quality",
        "candidates": args.candidates}
    if args.steps:
        generation["steps"] = args.steps
    return parse_config({"models": {"preset": "tiny", "device": args.device,
                                    "dtype": args.dtype, "sound_backend": backend},
                         "generation": generation}, environ={})


def build_captioner(args: argparse.Namespace, precision: Precision) -> Captioner:
    if args.preset == "real-random":
        return real_size_captioner(precision.device, precision.dtype, args.beams,
                                   args.max_tokens)
    return ModelLoader(bench_config((args.backend or ["audioldm"])[0], args)).captioner()


def build_generator(backend: str, args: argparse.Namespace, config: Config,
                    precision: Precision) -> SoundGenerator:
    if args.preset == "tiny":
        return ModelLoader(config).sound_generator()
    if backend not in REAL_SIZE:
        raise SystemExit(f"--preset real-random has no {backend} build; use "
                         f"{' or '.join(REAL_SIZE)}")
    pipeline_cls, components = REAL_SIZE[backend]
    device = precision.device
    dtype = sound_dtype(backend, device, precision.dtype)
    with quiet_construction():
        pipe = pipeline_cls(**components())
    needs_clap = (args.candidates or auto_candidates(device)) > 1
    scorer: Scorer | None = real_size_clap(device, dtype) if needs_clap else None
    return SoundGenerator(pipe, device=device, dtype=dtype, scorer=scorer)


# -- measuring ---------------------------------------------------------------------------------

def pictures(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(SEED)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (320, 240), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = (int(v) for v in rng.integers(0, 280, 2))
            draw.rectangle((x, y, x + 40, y + 30),
                           fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        out.append(img)
    return out


def encode_all(results: list[PipelineResult]) -> float:
    """Seconds to encode every clip as the bot does: OGG/Opus and MP3."""
    started = time.perf_counter()
    for r in results:
        for fmt in ("ogg", "mp3"):
            encode_clip(r.audio, r.sample_rate, fmt)
    return time.perf_counter() - started


def measure(run: Callable[[], list[PipelineResult]]) -> dict[str, float]:
    started = time.perf_counter()
    results = run()
    total = time.perf_counter() - started
    encode = encode_all(results)
    return {"caption": results[0].timings["caption_s"], "sound": results[0].timings["sound_s"],
            "encode": encode, "total": total + encode}


def add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + v for k, v in b.items()}


def params(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def sound_modules(generator: SoundGenerator) -> dict[str, torch.nn.Module]:
    modules = {name: part for name, part in generator.pipe.components.items()
               if isinstance(part, torch.nn.Module)}
    model = getattr(generator.scorer, "model", None)
    if isinstance(model, torch.nn.Module):
        modules["clap"] = model
    return modules


def run_backend(backend: str, args: argparse.Namespace, captioner: Captioner,
                caption_work: Work, precision: Precision, limits: Limits) -> dict[str, Any]:
    """Build one backend's pipeline; time the first picture, later ones, one batch; print."""
    config = bench_config(backend, args)
    started = time.perf_counter()
    generator = build_generator(backend, args, config, precision)
    build_s = time.perf_counter() - started
    pipeline = Pipeline(captioner, generator, prompt_template=config.generation.prompt_template)
    options = GenerationOptions.from_config(config.generation)
    inputs = [PipelineInput(image=img, seed=i) for i, img in enumerate(pictures(args.n))]

    first = measure(lambda: pipeline.run(inputs[:1], options))  # one-time set-up included
    later: dict[str, float] = {}
    for item in inputs:
        later = add(later, measure(lambda item=item: pipeline.run([item], options)))
    n = args.n
    later = {k: v / n for k, v in later.items()}
    batch = {k: v / n for k, v in measure(lambda: pipeline.run(inputs, options)).items()}
    prompt = pipeline.prompt_for("a picture")
    with counting(list(sound_modules(generator).values())) as sound_work:
        generator.render([prompt], [0], options)
    work = {"caption": caption_work, "sound": sound_work,
            "total": Work(caption_work.flops + sound_work.flops,
                          caption_work.weight_bytes + sound_work.weight_bytes)}
    dtype = generator.dtype
    bounds = {"caption": limits.bound(caption_work.flops, caption_work.weight_bytes,
                                      captioner.dtype),
              "sound": limits.bound(sound_work.flops, sound_work.weight_bytes, dtype)}
    bounds["total"] = bounds["caption"] + bounds["sound"]  # encoding has no bound here

    parts = ", ".join(f"{name} {params(sum(p.numel() for p in m.parameters()))}"
                      for name, m in sound_modules(generator).items())
    takes = generator.candidate_count(options)
    print(f"== {backend}: {args.seconds:g} s clips at {generator.sample_rate} Hz x "
          f"{generator.channels} ch, {options.steps} steps, guidance {options.guidance_scale:g}, "
          f"{takes} take(s) per picture, {dtype_name(dtype)}; built in {build_s:.1f} s")
    print(f"   parameters: {parts}")
    print(f"   {'stage':<8} {'first':>8} {'later':>8} {f'batch of {n}':>11}   {ROOFLINE_HEADER}"
          "   (per picture; roofline of a later one; first = this backend's first picture)")
    for stage in STAGES:
        row = f"   {stage:<8} {first[stage]:>6.2f} s {later[stage]:>6.2f} s {batch[stage]:>9.2f} s"
        if stage in work:
            row += "   " + cells(later[stage], work[stage], bounds[stage])
        print(row)
    print()
    return {"backend": backend, "params": sum(sum(p.numel() for p in m.parameters())
                                              for m in sound_modules(generator).values()),
            "steps": options.steps, "takes": takes, "first": first["total"],
            "later": later["total"], "batch": batch["total"], "sound": later["sound"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", choices=("tiny", "real-random"), default="tiny")
    ap.add_argument("--backend", action="append", choices=("audioldm", "audioldm2",
                                                           "stable-audio-3"),
                    help="sound backend (repeat for several; default audioldm and stable-audio-3)")
    ap.add_argument("--n", type=int, default=4, help="pictures (default 4)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                    help="as [models] dtype (auto: fp16 on CUDA, bf16 on a CPU where it pays)")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=0,
                    help="diffusion steps (0: each backend's default: AudioLDM 20, SA3 8)")
    ap.add_argument("--candidates", type=int, default=1,
                    help="takes per image, best kept by CLAP (0: auto for the device)")
    ap.add_argument("--scheduler", choices=("ddim", "dpm"), default="dpm")
    ap.add_argument("--beams", type=int, default=2, help="caption beams (bot default 6)")
    ap.add_argument("--max-tokens", type=int, default=8, help="caption tokens (bot default 30)")
    ap.add_argument("--caption-batches", default="1,4,8",
                    help="pictures per caption batch to time (default 1,4,8)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    # One picture alone is always measured: the stage tables use its figures.
    batches = tuple(sorted({1, *(int(b) for b in args.caption_batches.split(",") if b.strip())}))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    precision = choose_precision(args.device, args.dtype, test_models=args.preset == "tiny")
    device = precision.device
    for line in header_lines(device):
        print(line)
    print(f"Sonify pipeline benchmark: preset {args.preset}; {precision.describe()}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    dtypes = (torch.float32, torch.bfloat16, torch.float16) if device.type == "cuda" else \
        tuple(dict.fromkeys((torch.float32, torch.bfloat16, precision.dtype)))
    print(f"N={args.n} pictures, captions {args.beams} beams x {args.max_tokens} tokens")
    print()
    # Measured again before each table (other load comes and goes): the best figures so far.
    limits = measure_limits(device, dtypes)
    print(f"this machine now: {limits.describe()}")
    captioner = build_captioner(args, precision)  # one for every backend: building takes a while
    caption_work = print_caption_speed(captioner, pictures(max(batches)), limits, batches)
    rows = []
    for backend in args.backend or ["audioldm", "stable-audio-3"]:
        limits = limits.best_with(measure_limits(device, dtypes))
        print(f"best so far: {limits.describe()}")
        rows.append(run_backend(backend, args, captioner, caption_work, precision, limits))
        gc.collect()  # the previous backend's weights go before the next one is built

    print("side by side (per picture, caption + sound + encode; first = right after loading)")
    print(f"{'backend':<16} {'sound params':>12} {'steps':>5} {'takes':>5} {'sound':>8} "
          f"{'first':>8} {'later':>8} {f'batch of {args.n}':>11}")
    for r in rows:
        print(f"{r['backend']:<16} {params(r['params']):>12} {r['steps']:>5} {r['takes']:>5} "
              f"{r['sound']:>6.2f} s {r['first']:>6.2f} s {r['later']:>6.2f} s "
              f"{r['batch']:>9.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
