"""SoundGenerator on tiny AudioLDM / AudioLDM 2 / Stable Audio 3 pipelines (the real classes).

diffusers no longer tests its deprecated AudioLDMPipeline: these tests are its guard here.
Tests parametrized over `ALL` run on every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from aiohttp import web
from huggingface_hub import hf_hub_download
from huggingface_hub import utils as hub_utils

from core.config import ModelsConfig
from core.errors import ConfigError, ModelMissingError
from core.models.sound import SoundGenerator, take_seed
from core.models.tiny.audioldm import build_tiny_audioldm, build_tiny_audioldm2
from tests.conftest import TINY_CACHE
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

PROMPTS = ["a dog barking in a large empty hall far away", "rain", "a church bell ringing"]
SEEDS = [11, 22, 33]


@pytest.mark.parametrize("backend", ALL)
def test_batch_in_one_call_equals_single_calls(backend: str,
                                               request: pytest.FixtureRequest) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    batch = clips(gen, PROMPTS, SEEDS, opts())
    assert len(batch) == 3
    for audio in batch:
        assert_clip(audio, 1.0, gen.sample_rate, gen.channels)
    singles = [clips(gen, [p], [s], opts())[0] for p, s in zip(PROMPTS, SEEDS, strict=True)]
    for got, alone in zip(batch, singles, strict=True):
        np.testing.assert_allclose(got, alone, atol=1e-5, rtol=0)
    # The comparison means something only if the clips differ from one another.
    assert float(np.abs(batch[0] - batch[1]).max()) > 1e-3


def test_audioldm2_matches_a_plain_diffusers_call(v2: SoundGenerator) -> None:
    ours = clips(v2, ["a dog"], [5], opts())[0]
    ref = v2.pipe("a dog", negative_prompt="low quality", audio_length_in_s=1.0,
                  num_inference_steps=2, guidance_scale=2.5,
                  generator=torch.Generator().manual_seed(5)).audios[0]
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("seconds", [0.73, 1.5, 2.0])
def test_output_has_exactly_the_requested_length(backend: str, seconds: float,
                                                 request: pytest.FixtureRequest) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    (audio,) = clips(gen, ["wind"], [1], opts(seconds=seconds))
    assert_clip(audio, seconds, gen.sample_rate, gen.channels)


@pytest.mark.parametrize("backend", ["v1", "v2"])  # Stable Audio 3 keeps its own sampler
def test_schedulers_switch_without_reloading(backend: str,
                                             request: pytest.FixtureRequest) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    unet = gen.pipe.unet
    ddim = clips(gen, ["a bell"], [3], opts(scheduler="ddim", steps=3))[0]
    dpm = clips(gen, ["a bell"], [3], opts(scheduler="dpm", steps=3))[0]
    again = clips(gen, ["a bell"], [3], opts(scheduler="ddim", steps=3))[0]
    assert type(gen.pipe.scheduler).__name__ == "DDIMScheduler"
    assert gen.pipe.unet is unet
    assert_clip(dpm, 1.0, gen.sample_rate, gen.channels)
    assert float(np.abs(ddim - dpm).max()) > 1e-4
    np.testing.assert_array_equal(ddim, again)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("scheduler", ["ddim", "dpm"])
def test_progress_reports_each_step_up_to_total(backend: str, scheduler: str,
                                                request: pytest.FixtureRequest) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    seen: list[tuple[int, int]] = []
    clips(gen, PROMPTS[:2], SEEDS[:2], opts(steps=4, scheduler=scheduler),
                 progress=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.parametrize("backend", ALL)
def test_negative_prompt_is_used(backend: str, request: pytest.FixtureRequest) -> None:
    """Under guidance (Stable Audio 3 uses a negative prompt only then, as diffusers does)."""
    gen: SoundGenerator = request.getfixturevalue(backend)
    plain = clips(gen, ["a car"], [4], opts(negative_prompt=""))[0]
    negative = clips(gen, ["a car"], [4], opts(negative_prompt="people talking, music"))[0]
    assert_clip(negative, 1.0, gen.sample_rate, gen.channels)
    assert float(np.abs(plain - negative).max()) > 1e-5


@pytest.mark.parametrize("backend", ALL)
def test_seed_decides_the_noise(backend: str, request: pytest.FixtureRequest) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    a, b, c = clips(gen, ["a car", "a car", "a car"], [1, 1, 2], opts())
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert float(np.abs(a - c).max()) > 1e-4


@pytest.mark.parametrize("backend", ["v2", "sa3"])
def test_no_guidance_works(backend: str, request: pytest.FixtureRequest) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    rendered = clips(gen, PROMPTS[:2], SEEDS[:2], opts(guidance_scale=1.0))
    for clip in rendered:
        assert_clip(clip, 1.0, gen.sample_rate, gen.channels)


def test_audioldm2_ranks_candidates_per_prompt(v2: SoundGenerator) -> None:
    """Each prompt gets one of ITS OWN candidates (diffusers #13602 mixes them across prompts)."""
    prompts, seeds = PROMPTS[:2], SEEDS[:2]
    best = clips(v2, prompts, seeds, opts(candidates=2))
    alone = clips(v2, prompts[1:], seeds[1:], opts(candidates=2))[0]
    np.testing.assert_allclose(best[1], alone, atol=1e-5, rtol=0)
    for prompt, seed, clip in zip(prompts, seeds, best, strict=True):
        own = clips(v2, [prompt, prompt], [take_seed(seed, 0), take_seed(seed, 1)], opts())
        assert float(np.abs(own[0] - own[1]).max()) > 1e-4  # two different takes to pick from
        distances = [float(np.abs(clip - cand).max()) for cand in own]
        assert min(distances) < 1e-5, distances


@pytest.mark.parametrize("backend", ["v1", "sa3"])
def test_candidates_without_a_clap_model_render_one_take(
        backend: str, request: pytest.FixtureRequest) -> None:
    """No CLAP audio tower and none injected: nothing to rank with, so one take, as asked alone."""
    gen: SoundGenerator = request.getfixturevalue(backend)
    assert gen.scorer is None
    one = clips(gen, ["rain"], [8], opts())[0]
    many = gen.render(["rain"], [8], opts(candidates=3))[0]
    np.testing.assert_array_equal(one, many.audio)
    assert many.score is None


@pytest.mark.parametrize("backend", ALL)
def test_no_progress_bars_printed(backend: str, request: pytest.FixtureRequest,
                                  capfd: pytest.CaptureFixture[str]) -> None:
    clips(request.getfixturevalue(backend), ["rain"], [1], opts(steps=3))
    err = capfd.readouterr().err
    assert "it/s" not in err and "%|" not in err


@pytest.mark.parametrize("backend", ALL)
def test_start_up_is_quiet(backend: str, capfd: pytest.CaptureFixture[str],
                           caplog: pytest.LogCaptureFixture) -> None:
    """No deprecation chatter: AudioLDM's "has been deprecated", SAME's weight-norm warning."""
    BUILDS[FIXTURES[backend]](TINY_CACHE / "tiny")  # built beforehand: building is not start-up
    capfd.readouterr()
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the load
        generator(FIXTURES[backend])
    assert capfd.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records] == []


def test_inputs_checked(v1: SoundGenerator) -> None:
    assert clips(v1, [], [], opts()) == []
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        clips(v1, ["a", "b"], [1], opts())
    with pytest.raises(ValueError, match="unknown scheduler"):
        clips(v1, ["a"], [1], opts(scheduler="euler"))


@pytest.mark.parametrize("backend,model", [("audioldm", "cvssp/audioldm-s-full-v2"),
                                           ("audioldm2", "cvssp/audioldm2"),
                                           ("stable-audio-3",
                                            "stabilityai/stable-audio-3-small-sfx")])
def test_missing_weights_one_line_error(tmp_path: Path, backend: str, model: str) -> None:
    models = ModelsConfig(sound_backend=backend, sound_model="", cache_dir=str(tmp_path))
    started = time.monotonic()
    with pytest.raises(ModelMissingError) as info:
        SoundGenerator.from_config(models, CPU, torch.float32)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "\n" not in message
    assert model in message and "sound_model" in message and "SONIFY_MODELS=tiny" in message
    if backend == "stable-audio-3":  # gated: say how to get in
        assert "licence" in message and "HF_TOKEN" in message


def test_bad_local_folders(tmp_path: Path) -> None:
    missing = ModelsConfig(sound_model=str(tmp_path / "nope"))
    with pytest.raises(ModelMissingError, match=r"no model_index\.json"):
        SoundGenerator.from_config(missing, CPU, torch.float32)
    wrong = ModelsConfig(sound_backend="audioldm",
                         sound_model=str(build_tiny_audioldm2(TINY_CACHE / "tiny")))
    with pytest.raises(ConfigError, match="AudioLDM2Pipeline"):
        SoundGenerator.from_config(wrong, CPU, torch.float32)


# -- long prompts: cut at a word by us, not mid-word by diffusers with a warning per call ------

LONG = ("a dog barking at the mailman while rain drums on a tin roof and a train passes "
        "far away behind the hills, then thunder rolls over the valley")


@pytest.fixture
def library_warnings() -> Iterator[list[str]]:
    """What diffusers and transformers log at WARNING or above (they log through own handlers)."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep(logging.WARNING)
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for logger in loggers:
        logger.addHandler(handler)
    yield seen
    for logger in loggers:
        logger.removeHandler(handler)


@pytest.mark.parametrize("backend", ALL)
def test_long_prompts_are_cut_at_a_word_without_warnings(
        backend: str, request: pytest.FixtureRequest, library_warnings: list[str]) -> None:
    gen: SoundGenerator = request.getfixturevalue(backend)
    for tok, _ in gen.backend.text_windows():  # transformers warns once per tokenizer: reset it
        tok.deprecation_warnings.clear()
    fitted = gen.fit_prompt(LONG)
    words = fitted.split()
    assert LONG.startswith(fitted) and LONG[len(fitted)] in " ,"  # whole words only
    assert gen.prompt_fits(fitted) and not gen.prompt_fits(" ".join(LONG.split()[:len(words) + 1]))
    assert gen.fit_prompt(fitted) == fitted and gen.fit_prompt("rain") == "rain"
    long_negative = opts(negative_prompt=" ".join(["noise, distortion, hum"] * 10))
    clip, short = clips(gen, [LONG, fitted], [9, 9], long_negative)
    assert_clip(clip, 1.0, gen.sample_rate, gen.channels)
    np.testing.assert_allclose(clip, short, atol=1e-5, rtol=0)  # the fitted prompt is rendered
    assert library_warnings == []
    # Control: the same prompt straight into diffusers is cut and logged.
    length = {"duration": 1.0} if backend == "sa3" else {"audio_length_in_s": 1.0}
    gen.pipe(LONG, num_inference_steps=1, **length)
    assert any("truncated" in text for text in library_warnings), library_warnings


def test_a_single_overlong_word_is_cut_by_characters(v1: SoundGenerator) -> None:
    fitted = v1.fit_prompt("x" * 500)
    assert fitted == "x" * len(fitted) and v1.prompt_fits(fitted)
    assert not v1.prompt_fits(fitted + "x")


# -- half precision (fp16 is what CUDA gets; CPU fp16 here checks the dtype plumbing) ----------

@pytest.mark.parametrize("backend", ALL)
def test_fp16_renders_what_fp32_renders(backend: str, request: pytest.FixtureRequest) -> None:
    full: SoundGenerator = request.getfixturevalue(backend)
    half = generator(FIXTURES[backend], torch.float16)
    denoiser, decoder = ("transformer", "vae") if backend == "sa3" else ("unet", "vocoder")
    assert getattr(half.pipe, denoiser).dtype == getattr(half.pipe, decoder).dtype == torch.float16
    prompts, seeds = PROMPTS[:2], SEEDS[:2]
    expected = clips(full, prompts, seeds, opts())
    for got, ref in zip(clips(half, prompts, seeds, opts()), expected, strict=True):
        assert_clip(got, 1.0, half.sample_rate, half.channels)
        np.testing.assert_allclose(got, ref, atol=5e-3, rtol=0)
    if backend == "v2":  # CLAP ranking feeds fp16 features to the fp16 audio encoder
        (best,) = clips(half, prompts[:1], seeds[:1], opts(candidates=2))
        own = clips(half, [prompts[0]] * 2, [take_seed(seeds[0], j) for j in (0, 1)], opts())
        assert min(float(np.abs(best - cand).max()) for cand in own) < 1e-3


# -- loading: one line whatever fails, download bars kept ---------------------------------------

def test_missing_weights_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capfd: pytest.CaptureFixture[str],
                                         caplog: pytest.LogCaptureFixture,
                                         no_network: list[object]) -> None:
    """Online but no network: one line, and the libraries' own lines do not repeat it."""
    attempts = no_network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the hub's retry back-off
    caplog.set_level(logging.WARNING)
    models = ModelsConfig(sound_backend="audioldm", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ModelMissingError) as info:
        SoundGenerator.from_config(models, CPU, torch.float32)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert "cvssp/audioldm-s-full-v2" in message and "cannot be fetched" in message
    assert "sound_model" in message and "SONIFY_MODELS=tiny" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert attempts  # it did try the network
    assert capfd.readouterr().err == "" and not caplog.records


def test_corrupt_local_weights_are_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(build_tiny_audioldm(TINY_CACHE / "tiny"), folder)
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.write_bytes(b"this is not a safetensors file")
    with pytest.raises(ModelMissingError) as info:
        SoundGenerator.from_config(ModelsConfig(sound_model=str(folder)), CPU, torch.float32)
    message = str(info.value)
    assert "\n" not in message and "could not be loaded" in message and str(folder) in message


def test_download_bars_stay_on_while_loading_bars_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """A first real run fetches gigabytes: the Hub's download bar must survive our bar muting."""
    if huggingface_hub.constants.HF_HUB_DISABLE_PROGRESS_BARS:
        pytest.skip("HF_HUB_DISABLE_PROGRESS_BARS is set in this environment")
    models = ModelsConfig(sound_model=str(build_tiny_audioldm(TINY_CACHE / "tiny")))
    capfd.readouterr()
    SoundGenerator.from_config(models, CPU, torch.float32)  # mutes diffusers/transformers bars
    assert "Loading pipeline components" not in capfd.readouterr().err
    assert not hub_utils.are_progress_bars_disabled()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TQDM_POSITION", "-1")  # the hub draws bars on terminals only; pretend
    with fake_hub(b"w" * 300_000) as endpoint:
        path = hf_hub_download("sonify/weights", "model.bin", endpoint=endpoint,
                               cache_dir=str(tmp_path / "hub"))
    assert Path(path).read_bytes() == b"w" * 300_000
    err = capfd.readouterr().err
    assert "100%" in err and "300k/300k" in err, err


@contextlib.contextmanager
def fake_hub(body: bytes) -> Iterator[str]:
    """A loopback stand-in for the Hub's file endpoint (HEAD + GET on /resolve/)."""
    headers = {"X-Repo-Commit": "a" * 40, "ETag": '"sonify-test"'}

    async def resolve(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(body))})
        return web.Response(body=body, headers=headers)

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{repo:.*}/resolve/{rest:.*}", resolve)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
