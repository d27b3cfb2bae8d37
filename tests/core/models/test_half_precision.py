"""Half precision: a batched clip near its render alone; bf16 near fp32 (clips, captions).

In fp32 a job's clip in a batch equals its clip alone to 1e-5 (test_sound.py). In fp16 the
batched matrix products round differently from the single ones, and 2 diffusion steps carry
that on; on the tiny models the clips differ by at most 3.7e-4 (AudioLDM) and 5.5e-4
(AudioLDM 2) out of a peak of about 0.13 (CPU, torch 2.14.1). The README states the bound
asserted here. bf16 keeps fewer mantissa bits: about ten times as far apart.
Stable Audio 3 is left out of that one: its tiny model clips at full scale, where batching
differences cannot show. A CPU with native bf16 runs the models in bf16 (weights held in bf16):
its clips and caption log-probabilities against fp32's are bounded below, as the README states.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from core.models.captioner import Captioner
from core.models.tiny.coca import build_tiny_coca
from tests.conftest import TINY_CACHE
from tests.core.models.conftest import clips, generator, opts

PROMPTS = ["a dog barking in a large empty hall far away", "rain", "a church bell ringing"]
SEEDS = [11, 22, 33]
# Largest difference between a clip rendered in a batch and alone, in full-scale units
# (measured: fp16 5.5e-4, bf16 5.2e-3).
HALF_TOLERANCE = {torch.float16: 1e-3, torch.bfloat16: 1e-2}


@pytest.fixture(scope="module")
def tiny_coca() -> tuple[Any, Any, Any]:
    folder = build_tiny_coca(TINY_CACHE / "tiny")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


@pytest.fixture(scope="module", params=["audioldm", "audioldm2"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_a_batched_clip_is_within_the_stated_tolerance_of_its_clip_alone(
        backend: str, dtype: torch.dtype) -> None:
    with warnings.catch_warnings():
        # diffusers warns that fp16 is meant for accelerators; torch 2.14 runs it on CPU.
        warnings.simplefilter("ignore")
        gen = generator(backend, dtype)
        batch = clips(gen, PROMPTS, SEEDS, opts())
        singles = [clips(gen, [p], [s], opts())[0] for p, s in zip(PROMPTS, SEEDS, strict=True)]
    assert gen.dtype == dtype
    tolerance = HALF_TOLERANCE[dtype]
    for i, (got, alone) in enumerate(zip(batch, singles, strict=True)):
        assert got.dtype == np.float32 and np.isfinite(got).all()
        np.testing.assert_allclose(got, alone, atol=tolerance, rtol=0)
        # Meaningful only if the clip is loud enough for the tolerance to be small next to it,
        # and if it is far from the other jobs' clips: a job gets its own noise in a batch.
        assert float(np.abs(got).max()) > max(0.05, 5 * tolerance)
        own = float(np.abs(got - alone).max())
        for j, other in enumerate(singles):
            if i != j:
                assert float(np.abs(got - other).max()) > max(tolerance, 10 * own)


# -- bf16 against fp32: what a CPU with native bf16 gets under [models] dtype = "auto" ---------

# Largest difference between a clip rendered in bf16 and in fp32 (same prompt, same seed), in
# full-scale units (measured, 2 steps: AudioLDM 4.5e-3, AudioLDM 2 7.3e-3, Stable Audio 3
# 9.0e-3 out of a peak of 1.0; rms differences 0.5-1.7e-3).
BF16_CLIP_TOLERANCE = 2e-2
# Largest difference of a caption step's log-probabilities, in nats (measured on the tiny CoCa
# 0.037; on the full-size architecture with random weights 0.04 for the caption's own tokens,
# 0.07 over the whole vocabulary).
BF16_LOGP_TOLERANCE = 0.1


@pytest.mark.parametrize("backend", ["audioldm", "audioldm2", "stable-audio-3"])
def test_a_bf16_clip_is_within_the_stated_tolerance_of_fp32(backend: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wide = clips(generator(backend), PROMPTS[:2], SEEDS[:2], opts())
        gen = generator(backend, torch.bfloat16)
        narrow = clips(gen, PROMPTS[:2], SEEDS[:2], opts())
    assert {p.dtype for p in gen.pipe.components["text_encoder"].parameters()} \
        == {torch.bfloat16}  # held in bf16, not cast per call
    for i, (got, want) in enumerate(zip(narrow, wide, strict=True)):
        assert got.dtype == np.float32 and np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=BF16_CLIP_TOLERANCE, rtol=0)
        assert float(np.abs(want - wide[1 - i]).max()) > 5 * BF16_CLIP_TOLERANCE


def test_bf16_caption_logprobs_are_within_the_stated_tolerance_of_fp32(
        tiny_coca: tuple[Any, Any, Any]) -> None:
    model, preprocess, tokenizer = tiny_coca
    fp32 = Captioner(model, preprocess, tokenizer, max_tokens=10)
    bf16 = Captioner(copy.deepcopy(model), preprocess, tokenizer, dtype=torch.bfloat16,
                     max_tokens=10)
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    assert not bf16.autocast  # weights held in bf16: CPU autocast would cast them every call
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
              for _ in range(3)]
    pixels = fp32.pixels(images)
    ids = fp32.decode_greedy(pixels)
    steps = min(len(row) for row in ids)
    tokens = torch.tensor([[fp32.sot_id, *row[:steps]] for row in ids])
    logps = []
    for captioner in (fp32, bf16):
        with torch.inference_mode():
            state = captioner._start(pixels, 1, steps)
            logps.append(torch.stack([captioner._logprobs(state, tokens[:, t], steps)
                                      for t in range(steps)], dim=1))
    finite = torch.isfinite(logps[0])
    assert torch.equal(finite, torch.isfinite(logps[1]))
    difference = (logps[0] - logps[1])[finite].abs()
    assert float(difference.max()) < BF16_LOGP_TOLERANCE
    assert float(difference.max()) > 0  # really computed in another precision
