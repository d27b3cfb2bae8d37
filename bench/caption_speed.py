"""The caption stage alone: per-picture time by batch size, and one decoder step by length.

A decoder step over a few beams reads every decoder weight once: pictures captioned in one
batch share that read, and with cached attention a step costs about the same at the 30th
token as at the first.
"""

from __future__ import annotations

import time

import torch
from PIL import Image
from roofline import ROOFLINE_HEADER, Limits, Work, best_time, counting, roofline_cells

from core.models.caption_decoder import CachedState
from core.models.captioner import Captioner
from core.models.precision import dtype_name


def caption_work(captioner: Captioner, images: list[Image.Image]) -> Work:
    with counting([captioner.model]) as work:
        captioner.caption(images)
    return work


def step_seconds(captioner: Captioner, image: Image.Image, tokens: int) -> tuple[float, Work]:
    """The best time of the decoder step that feeds token number `tokens`, and its work."""
    decoder, beams = captioner.decoder, captioner.beams
    with torch.inference_mode():
        state = captioner._start(captioner.pixels([image]), beams, tokens)
        feed = torch.full((beams,), 320, dtype=torch.long, device=captioner.device)
        for _ in range(tokens - 1):
            decoder.step(state, feed)
        assert isinstance(state, CachedState)
        cached = state

        def step() -> None:
            # Each timed step feeds the same position again, so all are equal work.
            cached.length = tokens - 1
            decoder.step(cached, feed)

        seconds = best_time(step)
        with counting([captioner.model]) as work:
            step()
    return seconds, work


def print_caption_speed(captioner: Captioner, pictures: list[Image.Image], limits: Limits,
                        batches: tuple[int, ...]) -> Work:
    """Print the caption section; returns the work of one picture captioned alone."""
    dtype = captioner.dtype
    params = sum(p.numel() for p in captioner.model.parameters())
    print(f"== caption: CoCa {params / 1e6:.1f} M, {captioner.beams} beams x "
          f"{captioner.max_tokens} tokens, {dtype_name(dtype)}")
    started = time.perf_counter()
    captioner.caption(pictures[:1])  # first use: one-time set-up stays out of the table
    print(f"   the first picture after loading: {time.perf_counter() - started:.2f} s")
    print(f"   {'pictures':>8} {'per picture':>12} {ROOFLINE_HEADER}   (per picture)")
    single = Work()
    for n in batches:
        images = (pictures * n)[:n]
        started = time.perf_counter()
        captioner.caption(images)
        per_picture = (time.perf_counter() - started) / n
        work = caption_work(captioner, images)
        per = Work(work.flops / n, work.weight_bytes / n)
        if n == 1:
            single = work
        bound = limits.bound(per.flops, per.weight_bytes, dtype)
        print(f"   {n:>8} {per_picture:>10.2f} s {roofline_cells(per_picture, per, bound)}")
    cells = []
    first = 0.0
    for tokens in (1, captioner.max_tokens):
        seconds, work = step_seconds(captioner, pictures[0], tokens)
        first = first or seconds
        bound = limits.bound(work.flops, work.weight_bytes, dtype)
        cells.append(f"token {tokens}: {seconds * 1e3:.1f} ms ({work.weight_bytes / 1e9:.2f} GB "
                     f"read, bound {bound * 1e3:.1f} ms, x {seconds / bound:.1f})")
    print(f"   decoder step, {captioner.beams} beams of 1 picture: {'; '.join(cells)}; "
          f"token {captioner.max_tokens} / token 1 = {seconds / first:.2f}")
    print()
    return single
