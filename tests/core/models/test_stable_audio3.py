"""Stable Audio 3 as a sound backend: the tiny pipeline through SoundGenerator and Pipeline,
its defaults, and the one-line errors for gated or unconverted weights."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import huggingface_hub.hf_api
import numpy as np
import pytest
import torch
from aiohttp import web

from core.config import ModelsConfig, parse_config
from core.errors import ModelMissingError
from core.models.context_cache import ContextKVProcessor
from core.models.hub import load_diffusers_pipeline
from core.models.pipeline import Pipeline, PipelineInput
from core.models.sound import SoundGenerator, sound_dtype
from core.models.tiny.stable_audio3 import build_tiny_stable_audio3
from tests.conftest import TINY_CACHE
from tests.core.models.conftest import CPU, assert_clip, clips, generator, opts

RATE = 44_100
PROMPTS = ["footsteps on gravel", "a door creaks open", "thunder far away", "a kettle whistles"]
SEEDS = [5, 6, 7, 8]


def test_a_batch_renders_stereo_clips_of_the_asked_length_equal_to_singles(
        sa3: SoundGenerator) -> None:
    assert (sa3.sample_rate, sa3.channels) == (RATE, 2)
    for seconds in (0.6, 2.5):
        batch = clips(sa3, PROMPTS, SEEDS, opts(seconds=seconds, steps=4))
        for clip in batch:
            assert_clip(clip, seconds, RATE, channels=2)
        for prompt, seed, clip in zip(PROMPTS, SEEDS, batch, strict=True):
            (alone,) = clips(sa3, [prompt], [seed], opts(seconds=seconds, steps=4))
            np.testing.assert_allclose(clip, alone, atol=1e-5, rtol=0)
        assert float(np.abs(batch[0] - batch[1]).max()) > 1e-2  # distinct clips
        assert float(np.abs(batch[0][0] - batch[0][1]).max()) > 1e-3  # two distinct channels


def test_lengths_past_the_pipelines_ten_seconds_are_rendered_not_padded(
        sa3: SoundGenerator) -> None:
    """15 s is asked of the model itself (diffusers' default is 10 s): the duration it is
    conditioned on, latents long enough for 15 s, and sound to the end, not 5 s of padding."""
    seconds = 15.0
    durations: list[float] = []
    latent_lengths: list[int] = []
    hooks = [sa3.pipe.duration_embedder.register_forward_pre_hook(
                 lambda _m, args: durations.extend(float(d) for d in args[0])),
             sa3.pipe.transformer.register_forward_pre_hook(
                 lambda _m, args: latent_lengths.append(int(args[0].shape[-1])))]
    try:
        (take,) = sa3.render(["waves on a pebble beach"], [3], opts(seconds=seconds))
    finally:
        for hook in hooks:
            hook.remove()
    assert set(durations) == {seconds}
    ratio = sa3.pipe.vae.downsampling_ratio
    assert set(latent_lengths) == {math.ceil(seconds * RATE / ratio)}, (latent_lengths, ratio)
    assert_clip(take.audio, seconds, RATE, channels=2)
    for second in range(int(seconds)):  # every second of it is sound, the last five too
        window = take.audio[:, second * RATE:(second + 1) * RATE]
        assert float(np.abs(window).max()) > 1e-3, f"silent from {second} s"


def test_renders_what_a_plain_diffusers_call_renders(sa3: SoundGenerator) -> None:
    ours = clips(sa3, ["a dog"], [5], opts(steps=3, guidance_scale=1.0))[0]
    ref = sa3.pipe("a dog", duration=1.0, num_inference_steps=3,
                   generator=torch.Generator().manual_seed(5), output_type="np").audios[0]
    np.testing.assert_allclose(ours, ref[:, :RATE], atol=1e-6, rtol=0)


def test_context_projected_once_per_call_renders_what_stock_diffusers_renders(
        sa3: SoundGenerator) -> None:
    """The cross-attention keys/values kept between steps are exactly the ones recomputed."""
    stock = load_diffusers_pipeline("stable-audio-3", str(build_tiny_stable_audio3(
        TINY_CACHE / "tiny")), dtype=torch.float32)
    stock.set_progress_bar_config(disable=True)
    assert not any(isinstance(m.processor, ContextKVProcessor)
                   for m in stock.transformer.modules() if hasattr(m, "processor"))
    kept = [m.processor for m in sa3.pipe.transformer.modules()
            if isinstance(getattr(m, "processor", None), ContextKVProcessor)]
    assert len(kept) == len(sa3.pipe.transformer.transformer_blocks)
    # One after the other with the same shapes, so a stale projection would show; under
    # guidance the batch doubles.
    for prompts, seeds, guidance in ((["a dog"], [5], 1.0), (["rain"], [5], 1.0),
                                     (PROMPTS[:2], [6, 7], 3.0), (PROMPTS[2:], [6, 7], 3.0)):
        ours = clips(sa3, prompts, seeds, opts(steps=3, guidance_scale=guidance))
        negative = ["low quality"] * len(prompts) if guidance > 1 else None
        ref = stock(prompts, duration=1.0, num_inference_steps=3, guidance_scale=guidance,
                    negative_prompt=negative, output_type="np",
                    generator=[torch.Generator().manual_seed(s) for s in seeds]).audios
        for got, want in zip(ours, ref, strict=True):
            np.testing.assert_allclose(got, want[:, :RATE], atol=1e-6, rtol=0)
        assert all(p._kv is None for p in kept)  # nothing held between calls
    # Called directly, nobody clears the kept projections: a new context replaces them.
    for prompt in ("a dog", "rain", "a dog"):
        ours, ref = (pipe(prompt, duration=1.0, num_inference_steps=2, output_type="np",
                          generator=torch.Generator().manual_seed(3)).audios
                     for pipe in (sa3.pipe, stock))
        np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


def test_keeps_its_own_sampler_whatever_the_scheduler_option(sa3: SoundGenerator) -> None:
    ddim, dpm = (clips(sa3, ["rain"], [2], opts(scheduler=name))[0] for name in ("ddim", "dpm"))
    np.testing.assert_array_equal(ddim, dpm)
    assert type(sa3.pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"


def test_negative_prompt_only_counts_under_guidance(sa3: SoundGenerator) -> None:
    """Distilled checkpoints run without guidance; a negative prompt then changes nothing."""
    plain, negative = (clips(sa3, ["a car"], [4], opts(guidance_scale=1.0,
                                                        negative_prompt=text))[0]
                       for text in ("", "people talking, music"))
    np.testing.assert_array_equal(plain, negative)


def test_steps_and_guidance_default_to_the_distilled_checkpoints() -> None:
    """8 steps without guidance unless the file says otherwise; AudioLDM keeps its own."""
    sa3 = parse_config({"models": {"sound_backend": "stable-audio-3"}}, environ={})
    assert (sa3.generation.steps, sa3.generation.guidance_scale) == (8, 1.0)
    chosen = parse_config({"models": {"sound_backend": "stable-audio-3"},
                           "generation": {"steps": 12}}, environ={})
    assert (chosen.generation.steps, chosen.generation.guidance_scale) == (12, 1.0)
    default = parse_config({}, environ={})
    assert (default.generation.steps, default.generation.guidance_scale) == (20, 2.5)


def test_pipeline_renders_stereo_results_and_shortens_to_its_window(sa3: SoundGenerator) -> None:
    pipeline = Pipeline(None, sa3, prompt_template="The sound of {caption}, as heard in real life")
    long = ("A brown dog running along a sandy beach while big waves crash on the rocks and "
            "seagulls circle over the fishing boats near the old harbour")
    short, cut = pipeline.run([PipelineInput(caption="A bell.", seed=1),
                               PipelineInput(caption=long, seed=2)], opts())
    for result in (short, cut):
        assert result.sample_rate == RATE
        assert_clip(result.audio, 1.0, RATE, channels=2)
        assert result.score is None  # one take: nothing was ranked
    assert short.prompt == "The sound of a bell, as heard in real life"
    assert cut.prompt.startswith("The sound of a brown dog")
    assert cut.prompt.endswith(", as heard in real life") and sa3.prompt_fits(cut.prompt)
    assert not sa3.prompt_fits(f"The sound of {long}, as heard in real life")


def test_half_precision_plumbing(sa3: SoundGenerator) -> None:
    expected = clips(sa3, PROMPTS[:2], SEEDS[:2], opts())
    bf16 = generator("stable-audio-3", torch.bfloat16)
    assert bf16.pipe.transformer.dtype == torch.bfloat16
    for got, ref in zip(clips(bf16, PROMPTS[:2], SEEDS[:2], opts()), expected, strict=True):
        assert_clip(got, 1.0, RATE, channels=2)
        assert float(np.abs(got - ref).mean()) < 0.05


def test_bf16_replaces_fp16_on_gpus_that_have_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """T5Gemma can overflow in fp16; on a CUDA device with bf16, Stable Audio 3 gets bf16."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert sound_dtype("stable-audio-3", cuda, torch.float16) == torch.bfloat16
    assert sound_dtype("audioldm", cuda, torch.float16) == torch.float16
    assert sound_dtype("stable-audio-3", CPU, torch.float32) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert sound_dtype("stable-audio-3", cuda, torch.float16) == torch.float16


# -- the weights are gated, and published in Stability's own layout ---------------------------

SHA = "a" * 40


@contextlib.contextmanager
def fake_hub(*, gated: bool) -> Iterator[str]:
    """A loopback Hub: every answer refused as gated, or a repository without model_index.json."""

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=401, text="Access restricted", headers={
            "X-Error-Code": "GatedRepo",
            "X-Error-Message": "Access to model is restricted. You must be authenticated."})

    async def info(request: web.Request) -> web.Response:
        files = [{"rfilename": name} for name in ("model.safetensors", "model_config.json")]
        return web.json_response({"id": "stabilityai/stable-audio-3-small-sfx", "sha": SHA,
                                  "siblings": files, "private": False, "gated": "manual"},
                                 headers={"X-Repo-Commit": SHA})

    async def no_file(request: web.Request) -> web.Response:
        return web.Response(status=404, text="Entry not found",
                            headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": SHA})

    loop = asyncio.new_event_loop()
    app = web.Application()
    if gated:
        app.router.add_route("*", "/{tail:.*}", refuse)
    else:
        app.router.add_route("*", "/api/{tail:.*}", info)
        app.router.add_route("*", "/{tail:.*}", no_file)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "not-diffusers"])
def test_hub_refusals_are_one_line(gated: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capfd: pytest.CaptureFixture[str],
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the hub's retry back-off
    models = ModelsConfig(sound_backend="stable-audio-3", cache_dir=str(tmp_path))
    capfd.readouterr()
    with fake_hub(gated=gated) as endpoint:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", endpoint)  # built at import
        with pytest.raises(ModelMissingError) as info:
            SoundGenerator.from_config(models, CPU, torch.float32)
    message = str(info.value)
    assert "\n" not in message and info.value.__cause__ is None
    assert message.startswith("Sound model 'stabilityai/stable-audio-3-small-sfx' ")
    assert ("gated" if gated else "not as a diffusers pipeline") in message, message
    assert "licence" in message and "HF_TOKEN" in message and "sound_model" in message
    assert capfd.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
