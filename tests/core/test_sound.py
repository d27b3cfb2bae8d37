"""SoundGenerator on tiny AudioLDM / AudioLDM 2 pipelines (the real diffusers classes).

diffusers no longer tests its deprecated AudioLDMPipeline: these tests are its guard here.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import ModelsConfig
from core.errors import ConfigError, ModelMissingError
from core.options import GenerationOptions
from core.sound import SoundGenerator
from core.tiny.audioldm import build_tiny_audioldm, build_tiny_audioldm2
from tests.conftest import TINY_CACHE

CPU = torch.device("cpu")
PROMPTS = ["a dog barking in a large empty hall far away", "rain", "a church bell ringing"]
SEEDS = [11, 22, 33]


def opts(**changes: object) -> GenerationOptions:
    base: dict[str, object] = {"seconds": 1.0, "steps": 2, "guidance_scale": 2.5,
                               "negative_prompt": "low quality", "scheduler": "ddim"}
    base.update(changes)
    return GenerationOptions(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def v1() -> SoundGenerator:
    folder = build_tiny_audioldm(TINY_CACHE / "tiny")
    models = ModelsConfig(sound_backend="audioldm", sound_model=str(folder))
    return SoundGenerator.from_config(models, CPU, torch.float32)


@pytest.fixture(scope="module")
def v2() -> SoundGenerator:
    folder = build_tiny_audioldm2(TINY_CACHE / "tiny")
    models = ModelsConfig(sound_backend="audioldm2", sound_model=str(folder))
    return SoundGenerator.from_config(models, CPU, torch.float32)


def assert_clip(audio: np.ndarray, seconds: float, rate: int) -> None:
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] == round(seconds * rate)
    assert np.isfinite(audio).all()
    assert float(np.abs(audio).max()) > 1e-3  # a real render, not silence


@pytest.mark.parametrize("backend", ["v1", "v2"])
def test_batch_in_one_call_equals_single_calls(backend: str,
                                               request: pytest.FixtureRequest) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    batch = gen.generate(PROMPTS, SEEDS, opts())
    assert len(batch) == 3
    for audio in batch:
        assert_clip(audio, 1.0, gen.sample_rate)
    singles = [gen.generate([p], [s], opts())[0] for p, s in zip(PROMPTS, SEEDS, strict=True)]
    for got, alone in zip(batch, singles, strict=True):
        np.testing.assert_allclose(got, alone, atol=1e-5, rtol=0)
    # The comparison means something only if the clips differ from one another.
    assert float(np.abs(batch[0] - batch[1]).max()) > 1e-3


def test_audioldm2_matches_a_plain_diffusers_call(v2: SoundGenerator) -> None:
    ours = v2.generate(["a dog"], [5], opts())[0]
    ref = v2.pipe("a dog", negative_prompt="low quality", audio_length_in_s=1.0,
                  num_inference_steps=2, guidance_scale=2.5,
                  generator=torch.Generator().manual_seed(5)).audios[0]
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seconds", [0.73, 1.5, 2.0])
def test_output_has_exactly_the_requested_length(v1: SoundGenerator, seconds: float) -> None:
    (audio,) = v1.generate(["wind"], [1], opts(seconds=seconds))
    assert_clip(audio, seconds, 16000)


@pytest.mark.parametrize("backend", ["v1", "v2"])
def test_schedulers_switch_without_reloading(backend: str,
                                             request: pytest.FixtureRequest) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    unet = gen.pipe.unet
    ddim = gen.generate(["a bell"], [3], opts(scheduler="ddim", steps=3))[0]
    dpm = gen.generate(["a bell"], [3], opts(scheduler="dpm", steps=3))[0]
    again = gen.generate(["a bell"], [3], opts(scheduler="ddim", steps=3))[0]
    assert type(gen.pipe.scheduler).__name__ == "DDIMScheduler"
    assert gen.pipe.unet is unet
    assert_clip(dpm, 1.0, gen.sample_rate)
    assert float(np.abs(ddim - dpm).max()) > 1e-4
    np.testing.assert_array_equal(ddim, again)


@pytest.mark.parametrize("backend", ["v1", "v2"])
@pytest.mark.parametrize("scheduler", ["ddim", "dpm"])
def test_progress_reports_each_step_up_to_total(backend: str, scheduler: str,
                                                request: pytest.FixtureRequest) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    seen: list[tuple[int, int]] = []
    gen.generate(PROMPTS[:2], SEEDS[:2], opts(steps=4, scheduler=scheduler),
                 progress=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.parametrize("backend", ["v1", "v2"])
def test_negative_prompt_is_used(backend: str, request: pytest.FixtureRequest) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    plain = gen.generate(["a car"], [4], opts(negative_prompt=""))[0]
    negative = gen.generate(["a car"], [4], opts(negative_prompt="people talking, music"))[0]
    assert_clip(negative, 1.0, gen.sample_rate)
    assert float(np.abs(plain - negative).max()) > 1e-5


def test_seed_decides_the_noise(v1: SoundGenerator) -> None:
    a, b, c = v1.generate(["a car", "a car", "a car"], [1, 1, 2], opts())
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert float(np.abs(a - c).max()) > 1e-4


def test_no_guidance_works(v2: SoundGenerator) -> None:
    clips = v2.generate(PROMPTS[:2], SEEDS[:2], opts(guidance_scale=1.0))
    for clip in clips:
        assert_clip(clip, 1.0, v2.sample_rate)


def test_audioldm2_ranks_candidates_per_prompt(v2: SoundGenerator) -> None:
    """Each prompt gets one of ITS OWN candidates (diffusers #13602 mixes them across prompts)."""
    prompts, seeds = PROMPTS[:2], SEEDS[:2]
    best = v2.generate(prompts, seeds, opts(waveforms_per_prompt=2))
    alone = v2.generate(prompts[1:], seeds[1:], opts(waveforms_per_prompt=2))[0]
    np.testing.assert_allclose(best[1], alone, atol=1e-5, rtol=0)
    for prompt, seed, clip in zip(prompts, seeds, best, strict=True):
        # Candidate j of a prompt is rendered with seed + j * 2**32.
        own = v2.generate([prompt, prompt], [seed, seed + 2**32], opts())
        distances = [float(np.abs(clip - cand).max()) for cand in own]
        assert min(distances) < 1e-5, distances


def test_audioldm_ignores_candidates(v1: SoundGenerator) -> None:
    one = v1.generate(["rain"], [8], opts())[0]
    many = v1.generate(["rain"], [8], opts(waveforms_per_prompt=3))[0]
    np.testing.assert_array_equal(one, many)


def test_no_progress_bars_printed(v1: SoundGenerator, capfd: pytest.CaptureFixture[str]) -> None:
    v1.generate(["rain"], [1], opts(steps=3))
    err = capfd.readouterr().err
    assert "it/s" not in err and "%|" not in err


def test_inputs_checked(v1: SoundGenerator) -> None:
    assert v1.generate([], [], opts()) == []
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        v1.generate(["a", "b"], [1], opts())
    with pytest.raises(ValueError, match="unknown scheduler"):
        v1.generate(["a"], [1], opts(scheduler="euler"))


@pytest.mark.parametrize("backend,model", [("audioldm", "cvssp/audioldm-s-full-v2"),
                                           ("audioldm2", "cvssp/audioldm2")])
def test_missing_weights_one_line_error(tmp_path: Path, backend: str, model: str) -> None:
    models = ModelsConfig(sound_backend=backend, sound_model="", cache_dir=str(tmp_path))
    started = time.monotonic()
    with pytest.raises(ModelMissingError) as info:
        SoundGenerator.from_config(models, CPU, torch.float32)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "\n" not in message
    assert model in message and "sound_model" in message and "SONIFY_MODELS=tiny" in message


def test_bad_local_folders(tmp_path: Path) -> None:
    missing = ModelsConfig(sound_model=str(tmp_path / "nope"))
    with pytest.raises(ModelMissingError, match=r"no model_index\.json"):
        SoundGenerator.from_config(missing, CPU, torch.float32)
    wrong = ModelsConfig(sound_backend="audioldm",
                         sound_model=str(build_tiny_audioldm2(TINY_CACHE / "tiny")))
    with pytest.raises(ConfigError, match="AudioLDM2Pipeline"):
        SoundGenerator.from_config(wrong, CPU, torch.float32)
