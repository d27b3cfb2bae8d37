"""Sound generators over the tiny models of every backend, built once per test session."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from core.config import ModelsConfig
from core.models.backends import BACKENDS
from core.models.clap import Scorer
from core.models.sound import Progress, SoundGenerator
from core.options import GenerationOptions
from tests.conftest import TINY_CACHE

CPU = torch.device("cpu")
BUILDS = {name: backend.build_tiny for name, backend in BACKENDS.items()}
# Fixture name -> backend; every test parametrized over these runs on every backend.
FIXTURES = {"v1": "audioldm", "v2": "audioldm2", "sa3": "stable-audio-3"}
ALL = list(FIXTURES)


def opts(**changes: object) -> GenerationOptions:
    """Fast options: 1 s, 2 steps, one take unless asked."""
    base: dict[str, object] = {"seconds": 1.0, "steps": 2, "guidance_scale": 2.5,
                               "negative_prompt": "low quality", "scheduler": "ddim",
                               "candidates": 1}
    base.update(changes)
    return GenerationOptions(**base)  # type: ignore[arg-type]  # values typed per key above


def generator(backend: str, dtype: torch.dtype = torch.float32, *,
              scorer: Scorer | None = None) -> SoundGenerator:
    """A SoundGenerator loaded through the real loading code from the tiny model's folder."""
    folder = BUILDS[backend](TINY_CACHE / "tiny")
    models = ModelsConfig(sound_backend=backend, sound_model=str(folder))
    return SoundGenerator.from_config(models, CPU, dtype, scorer=scorer)


def clips(gen: SoundGenerator, prompts: Sequence[str], seeds: Sequence[int],
          options: GenerationOptions, progress: Progress | None = None) -> list[np.ndarray]:
    """Every prompt rendered in one call, as arrays (what `render` keeps, without scores)."""
    return [take.audio for take in gen.render(prompts, seeds, options, progress)]


def assert_clip(audio: np.ndarray, seconds: float, rate: int, channels: int = 1) -> None:
    """What a user gets: float32, the asked length at `rate`, mono 1-D or (channels, samples)."""
    assert audio.dtype == np.float32
    expected = (round(seconds * rate),) if channels == 1 else (channels, round(seconds * rate))
    assert audio.shape == expected, (audio.shape, expected)
    assert np.isfinite(audio).all()
    assert float(np.abs(audio).max()) > 1e-3  # a real render, not silence


@pytest.fixture(scope="session")
def v1() -> SoundGenerator:
    return generator("audioldm")


@pytest.fixture(scope="session")
def v2() -> SoundGenerator:
    return generator("audioldm2")


@pytest.fixture(scope="session")
def sa3() -> SoundGenerator:
    return generator("stable-audio-3")
