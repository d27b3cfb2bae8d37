"""Best of N: several takes per prompt in one batch, the one a scorer likes best is kept."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ModelMissingError
from core.models.clap import ClapScorer
from core.models.loading import ModelLoader
from core.models.pipeline import Pipeline, PipelineInput
from core.models.sound import SoundGenerator, auto_candidates, take_seed
from core.models.tiny.clap import build_tiny_clap
from core.options import GenerationOptions
from tests.conftest import TINY_CACHE, make_config
from tests.core.models.conftest import (
    ALL,
    BUILDS,
    CPU,
    FIXTURES,
    assert_clip,
    clips,
    generator,
    opts,
)


class Loudness:
    """A stand-in for CLAP: scores a clip by its mean level, whatever the text."""

    def score(self, texts: Sequence[str], audios: Sequence[np.ndarray], rate: int
              ) -> list[float]:
        assert len(texts) == len(audios)
        return [float(np.abs(a).mean()) for a in audios]


@pytest.fixture(scope="module")
def ranked() -> dict[str, SoundGenerator]:
    """A generator per backend ranking its takes by loudness."""
    return {name: generator(backend, scorer=Loudness()) for name, backend in FIXTURES.items()}


@pytest.mark.parametrize("backend", ALL)
def test_keeps_the_take_the_scorer_rates_highest(backend: str,
                                                  ranked: dict[str, SoundGenerator]) -> None:
    gen = ranked[backend]
    prompts, seeds, k = ["rain on a roof", "a dog barking"], [3, 4], 3
    kept = gen.render(prompts, seeds, opts(candidates=k))
    for prompt, seed, take in zip(prompts, seeds, kept, strict=True):
        assert_clip(take.audio, 1.0, gen.sample_rate, gen.channels)
        # Its own takes, each rendered alone: the kept clip is the loudest of them.
        own = clips(gen, [prompt] * k, [take_seed(seed, j) for j in range(k)], opts())
        levels = [float(np.abs(a).mean()) for a in own]
        best = int(np.argmax(levels))
        np.testing.assert_allclose(take.audio, own[best], atol=1e-5, rtol=0)
        assert take.score == pytest.approx(levels[best], abs=1e-6)
        assert len(set(np.round(levels, 6))) == k  # the takes differ, so the choice means something


def test_one_take_is_not_scored(ranked: dict[str, SoundGenerator]) -> None:
    gen = ranked["sa3"]
    (take,) = gen.render(["rain"], [1], opts(candidates=1))
    assert take.score is None
    np.testing.assert_array_equal(take.audio, clips(gen, ["rain"], [1], opts())[0])


def test_pipeline_results_carry_the_kept_takes_score(ranked: dict[str, SoundGenerator]) -> None:
    pipeline = Pipeline(None, ranked["v1"], prompt_template="The sound of {caption}")
    three, one = (pipeline.run([PipelineInput(caption="A bell.", seed=9)],
                               opts(candidates=n))[0] for n in (3, 1))
    assert three.score is not None and three.score == pytest.approx(
        float(np.abs(three.audio).mean()), abs=1e-6)
    assert one.score is None


def test_auto_is_one_take_on_a_cpu(ranked: dict[str, SoundGenerator]) -> None:
    assert auto_candidates(CPU) == 1 and auto_candidates(torch.device("cuda")) > 1
    gen = ranked["v1"]
    assert gen.candidate_count(opts(candidates=0)) == 1
    assert gen.candidate_count(opts(candidates=4)) == 4


def test_old_request_rows_still_load() -> None:
    """Rows written before the rename store `waveforms_per_prompt`."""
    stored = {"seconds": 4.0, "steps": 20, "guidance_scale": 2.5, "negative_prompt": "",
              "scheduler": "dpm", "waveforms_per_prompt": 2}
    assert GenerationOptions.from_dict(stored).candidates == 2
    fresh = GenerationOptions(candidates=3)
    assert GenerationOptions.from_dict(fresh.to_dict()) == fresh


# -- the CLAP scorer (tiny random CLAP: numbers mean nothing, the plumbing is real) -----------

@pytest.fixture(scope="module")
def clap() -> ClapScorer:
    return ClapScorer.from_pretrained(str(build_tiny_clap(TINY_CACHE / "tiny")))


def test_clap_scores_are_cosines_independent_of_the_batch(clap: ClapScorer) -> None:
    rng = np.random.default_rng(0)
    stereo = [(0.3 * rng.standard_normal((2, 44_100))).astype(np.float32) for _ in range(2)]
    texts = ["footsteps", "a long drone"]
    alone = [clap.score([t], [a], 44_100)[0] for t, a in zip(texts, stereo, strict=True)]
    together = clap.score(texts, stereo, 44_100)
    assert together == pytest.approx(alone, abs=1e-5)
    assert clap.score(texts, stereo, 44_100) == together
    # Longer than CLAP's 10 s window: cropped at random inside, yet the same score every time.
    long = (0.3 * rng.standard_normal(16_000 * 12)).astype(np.float32)
    assert clap.score(texts[1:], [long], 16_000) == clap.score(texts[1:], [long], 16_000)
    assert all(-1.0 <= s <= 1.0 for s in [*together, *clap.score(texts[1:], [long], 16_000)])
    assert clap.score([], [], 16_000) == []


def test_a_real_clap_ranks_takes_on_every_backend(clap: ClapScorer) -> None:
    for backend in FIXTURES.values():
        gen = generator(backend, scorer=clap)
        (take,) = gen.render(["a bell"], [2], opts(candidates=2))
        assert take.score is not None and -1.0 <= take.score <= 1.0
        assert_clip(take.audio, 1.0, gen.sample_rate, gen.channels)


# -- loading: CLAP once, at start-up when several takes are configured -------------------------

def test_loader_loads_clap_only_when_takes_are_ranked(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="core.models.clap")
    one = ModelLoader(make_config(tmp_path, models={"sound_backend": "stable-audio-3"}))
    assert one.sound_generator().scorer is not None
    # auto on a CPU renders 1 take: the start-up log shows no CLAP model loaded
    assert not [r for r in caplog.records if "CLAP model" in r.getMessage()]
    three = ModelLoader(make_config(tmp_path, models={"sound_backend": "stable-audio-3"},
                                    generation={"candidates": 3}))
    assert three.sound_generator().scorer is not None
    assert [r for r in caplog.records if "CLAP model" in r.getMessage()]
    (result,) = three.pipeline().run([PipelineInput(caption="Rain.", seed=1)],
                                     GenerationOptions.from_config(three.config.generation))
    assert result.score is not None and -1.0 <= result.score <= 1.0
    assert result.audio.shape == (2, 44_100)


def test_audioldm2_ranks_with_its_own_clap(tmp_path: Path) -> None:
    loader = ModelLoader(make_config(tmp_path, models={"sound_backend": "audioldm2"},
                                     generation={"candidates": 2}))
    assert isinstance(loader.sound_generator().scorer, ClapScorer)


def test_missing_clap_is_a_one_line_start_up_error(tmp_path: Path) -> None:
    sound = str(BUILDS["audioldm"](TINY_CACHE / "tiny"))
    config = make_config(tmp_path, models={"preset": "default", "sound_model": sound,
                                           "cache_dir": str(tmp_path / "empty")},
                         generation={"candidates": 2})
    with pytest.raises(ModelMissingError) as info:
        ModelLoader(config).sound_generator()
    message = str(info.value)
    assert "\n" not in message and "laion/clap-htsat-unfused" in message
    assert "clap_model" in message and "candidates = 1" in message
