"""Fit benchmark: how well the sound fits the picture, per sound backend and number of takes.

Usage: .venv/bin/python bench/fit_bench.py --images DIR [--preset default|tiny]
       [--backend audioldm|audioldm2|stable-audio-3 ...] [--candidates 1,3]
       [--seconds S] [--steps K] [--device auto|cpu|cuda] [--limit N] [--json PATH]

For each picture: caption (CoCa, once, shared by every row) -> prompt (the bot's template)
-> clip, then the CLAP similarity (cosine, -1..1) between the clip and the CAPTION, averaged
over the pictures, with the sound time per clip. One row per backend and per takes count, side
by side in one run. The same CLAP model (`[models] clap_model`, laion/clap-htsat-unfused by
default) judges every row; it also picks the best take where a backend has no CLAP of its own,
so rows with several takes are scored by the model that chose them against the prompt: read
their gain as an upper bound.

`--preset tiny` runs the tiny random models (the numbers mean nothing; the path is exercised);
`default` needs the real weights (a GPU is advisable). Without --images, a few synthetic
pictures stand in.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # real weights come from the cache, never mid-run
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image, ImageDraw

from core.config import Config, parse_config
from core.errors import ConfigError, ModelMissingError
from core.models.backends import BACKENDS
from core.models.clap import DEFAULT_CLAP, ClapScorer
from core.models.loading import ModelLoader
from core.models.pipeline import Pipeline, PipelineInput
from core.models.prompt import EMPTY_CAPTION
from core.models.sound import SoundGenerator
from core.options import GenerationOptions

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
SEED = 1234


def load_pictures(folder: Path | None, limit: int) -> tuple[list[str], list[Image.Image]]:
    """Pictures from `folder` (sorted by name), or synthetic ones when there is none."""
    if folder is None:
        rng = np.random.default_rng(SEED)
        images = []
        for _ in range(limit):
            img = Image.new("RGB", (256, 192), tuple(int(v) for v in rng.integers(0, 255, 3)))
            draw = ImageDraw.Draw(img)
            for _ in range(8):
                x, y = (int(v) for v in rng.integers(0, 220, 2))
                draw.ellipse((x, y, x + 36, y + 28),
                             fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            images.append(img)
        return [f"synthetic-{i}" for i in range(limit)], images
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise SystemExit(f"no pictures ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    images = []
    for path in paths:
        with Image.open(path) as img:
            images.append(img.convert("RGB"))
    return [p.name for p in paths], images


def backend_config(args: argparse.Namespace, backend: str) -> Config:
    """The bot's configuration for `backend`: its own step and guidance defaults."""
    generation: dict[str, Any] = {"seconds": args.seconds}
    if args.steps:
        generation["steps"] = args.steps
    models: dict[str, Any] = {"preset": args.preset, "device": args.device,
                              "sound_backend": backend, "cache_dir": args.cache_dir}
    if args.clap_model:
        models["clap_model"] = args.clap_model
    return parse_config({"models": models, "generation": generation}, environ={})


def fit_rows(backend: str, config: Config, loader: ModelLoader, clap: ClapScorer,
             captions: list[str], takes: list[int]) -> list[dict[str, Any]]:
    """Render every caption with `backend` for each takes count; score each clip against it."""
    # The shared CLAP picks the best take, except where the pipeline has its own (AudioLDM 2).
    scorer = None if BACKENDS[backend].has_own_clap else clap
    models = ModelLoader(config).models()
    generator = SoundGenerator.from_config(models, loader.device, loader.dtype, scorer=scorer)
    pipeline = Pipeline(None, generator, prompt_template=config.generation.prompt_template)
    rows = []
    for k in takes:
        options = replace(GenerationOptions.from_config(config.generation), candidates=k)
        pipeline.run([PipelineInput(caption=captions[0], seed=SEED)], options)  # warm-up
        fits, times, picked = [], [], []
        for i, caption in enumerate(captions):
            (result,) = pipeline.run([PipelineInput(caption=caption, seed=SEED + i)], options)
            times.append(result.timings["sound_s"])
            fits.append(clap.score([caption], [result.audio], result.sample_rate)[0])
            if result.score is not None:
                picked.append(result.score)
        rows.append({"backend": backend, "takes": generator.candidate_count(options),
                     "steps": options.steps, "guidance": options.guidance_scale,
                     "model": models.sound_model, "fit": fits, "sound_s": times,
                     "picked": picked, "dtype": str(generator.dtype).removeprefix("torch.")})
    return rows


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):+.3f} ± {sd:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--images", type=Path, help="folder of pictures (default: synthetic ones)")
    ap.add_argument("--preset", choices=("default", "tiny"), default="default")
    ap.add_argument("--backend", action="append", choices=sorted(BACKENDS),
                    help="sound backend (repeat for several; default audioldm and stable-audio-3)")
    ap.add_argument("--candidates", default="1,3",
                    help="comma-separated takes per picture, one row each (default 1,3)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=0, help="0: each backend's own default")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--limit", type=int, default=20, help="most pictures used (default 20)")
    ap.add_argument("--clap-model", default="", help="judge (default: [models] clap_model)")
    ap.add_argument("--cache-dir", default="", help="[models] cache_dir (default: HF's)")
    ap.add_argument("--json", type=Path, help="also write every score and time here")
    args = ap.parse_args(argv)
    try:
        takes = sorted({int(k) for k in args.candidates.split(",") if k.strip()})
    except ValueError:
        ap.error("--candidates takes whole numbers, e.g. 1,3")
    if not takes or min(takes) < 1:
        ap.error("--candidates must list takes counts of at least 1")
    if args.images is not None and not args.images.is_dir():
        ap.error(f"--images: {args.images} is not a folder")
    backends = args.backend or ["audioldm", "stable-audio-3"]

    names, images = load_pictures(args.images, args.limit)
    try:
        first = ModelLoader(backend_config(args, backends[0]))
        started = time.perf_counter()
        captioner = first.captioner()
        raw = captioner.caption(images)
        caption_s = (time.perf_counter() - started) / len(images)
        captions = [c.strip() or EMPTY_CAPTION for c in raw]
        clap = first.clap_scorer()
        rows: list[dict[str, Any]] = []
        for backend in backends:
            rows += fit_rows(backend, backend_config(args, backend), first, clap, captions,
                             takes)
            if torch.cuda.is_available():  # the previous backend's weights go before the next
                torch.cuda.empty_cache()
    except (ConfigError, ModelMissingError) as exc:  # missing weights: the one-line reason
        print(f"fit_bench: {exc}", file=sys.stderr)
        return 2
    judge = first.models().clap_model or DEFAULT_CLAP

    device = first.device
    where = args.images or "synthetic pictures"
    print(f"Sonify fit benchmark: preset {args.preset}, {device.type}, {len(images)} pictures "
          f"from {where}, {args.seconds:g} s clips, judged by CLAP {judge}")
    if args.preset == "tiny":
        print("TINY RANDOM MODELS: captions are junk and clips are noise; the numbers mean nothing")
    print(f"captions: {caption_s:.2f} s per picture (CoCa, {captioner.beams} beams)")
    print()
    print(f"{'backend':<16} {'takes':>5} {'steps':>5} {'dtype':>8} "
          f"{'fit: CLAP(clip, caption)':>26} {'kept take vs prompt':>20} {'s/clip':>7}")
    for r in rows:
        print(f"{r['backend']:<16} {r['takes']:>5} {r['steps']:>5} {r['dtype']:>8} "
              f"{spread(r['fit']):>26} {spread(r['picked']):>20} "
              f"{statistics.fmean(r['sound_s']):>7.2f}")
    if args.json:
        args.json.write_text(json.dumps({"pictures": names, "captions": captions,
                                         "judge": judge, "rows": rows}, indent=1),
                             encoding="utf-8")
        print(f"\nevery score and time: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
