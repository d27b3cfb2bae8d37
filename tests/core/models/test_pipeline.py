"""Pipeline: images → captions (one batched call) → prompts → sounds (one batched call)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.errors import BadRequest, ConfigError
from core.models.pipeline import Pipeline, PipelineInput
from core.models.prompt import prompt_from_caption
from core.options import GenerationOptions
from tests.core.models.conftest import clips

TEMPLATE = "The sound of {caption}, as heard in real life"
OPTIONS = GenerationOptions(seconds=1.0, steps=2, guidance_scale=2.5, negative_prompt="noise",
                            scheduler="dpm")


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (96, 72), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(0, 70, 2))
        draw.ellipse((x, y, x + 25, y + 20), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def test_pipeline_template_needs_placeholder(tiny_pipeline: Pipeline) -> None:
    with pytest.raises(ConfigError, match="prompt_template"):
        Pipeline(None, tiny_pipeline.generator, prompt_template="no placeholder")


def test_batched_images_equal_single_runs(tiny_pipeline: Pipeline) -> None:
    inputs = [PipelineInput(image=picture(i), seed=100 + i) for i in range(3)]
    batch = tiny_pipeline.run(inputs, OPTIONS)
    singles = [tiny_pipeline.run([item], OPTIONS)[0] for item in inputs]
    assert len(batch) == 3
    for got, alone in zip(batch, singles, strict=True):
        assert got.caption == alone.caption
        assert got.prompt == alone.prompt == tiny_pipeline.prompt_for(got.caption)
        assert got.sample_rate == 16000
        assert got.audio.dtype == np.float32 and got.audio.shape == (16000,)
        np.testing.assert_allclose(got.audio, alone.audio, atol=1e-5, rtol=0)
    assert float(np.abs(batch[0].audio - batch[1].audio).max()) > 1e-3


def test_caption_prompt_and_image_inputs_in_one_batch(tiny_pipeline: Pipeline) -> None:
    inputs = [PipelineInput(caption="A dog barking.", seed=1),
              PipelineInput(prompt="Heavy rain on a tin roof", seed=2),
              PipelineInput(image=picture(7), seed=3)]
    by_caption, by_prompt, by_image = tiny_pipeline.run(inputs, OPTIONS)
    assert by_caption.caption == "A dog barking."
    assert by_caption.prompt == "The sound of a dog barking, as heard in real life"
    assert by_prompt.prompt == "Heavy rain on a tin roof" and by_prompt.caption == ""
    assert by_image.prompt == tiny_pipeline.prompt_for(by_image.caption)
    direct = clips(tiny_pipeline.generator, [by_prompt.prompt], [2], OPTIONS)[0]
    np.testing.assert_allclose(by_prompt.audio, direct, atol=1e-5, rtol=0)


def test_timings_and_progress(tiny_pipeline: Pipeline) -> None:
    seen: list[tuple[int, int]] = []
    results = tiny_pipeline.run([PipelineInput(image=picture(1)), PipelineInput(caption="Wind.")],
                                OPTIONS, progress=lambda s, t: seen.append((s, t)))
    for result in results:
        assert result.timings["caption_s"] > 0 and result.timings["sound_s"] > 0
        assert result.timings["batch_size"] == 2
    assert seen[-1] == (2, 2)


def test_text_only_pipeline_without_captioner(tiny_pipeline: Pipeline) -> None:
    text_only = Pipeline(None, tiny_pipeline.generator, prompt_template=TEMPLATE)
    (result,) = text_only.run([PipelineInput(caption="Birds singing.", seed=4)], OPTIONS)
    assert result.prompt == "The sound of birds singing, as heard in real life"
    assert result.timings["caption_s"] < 0.05
    with pytest.raises(BadRequest):
        text_only.run([PipelineInput(image=picture(2))], OPTIONS)


def test_input_without_content_is_refused(tiny_pipeline: Pipeline) -> None:
    with pytest.raises(BadRequest, match="no image, caption or prompt"):
        tiny_pipeline.run([PipelineInput(caption="ok"), PipelineInput(caption="  ")], OPTIONS)
    assert tiny_pipeline.run([], OPTIONS) == []


LONG_CAPTION = ("A brown dog running along a sandy beach while big waves crash on the rocks and "
                "seagulls circle over the fishing boats near the old harbour.")


def test_long_captions_are_shortened_inside_the_template(tiny_pipeline: Pipeline) -> None:
    """The sound model reads 77 tokens (the tiny one: 75 bytes): the caption gives way, the
    template's ending stays, and the prompt reported is the one rendered."""
    by_caption, by_prompt = tiny_pipeline.run(
        [PipelineInput(caption=LONG_CAPTION, seed=5), PipelineInput(prompt=LONG_CAPTION, seed=6)],
        OPTIONS)
    fits = tiny_pipeline.generator.prompt_fits
    assert by_caption.caption == LONG_CAPTION  # what the user is shown stays whole
    prompt = by_caption.prompt
    assert prompt.startswith("The sound of a brown dog") and prompt.endswith(
        ", as heard in real life")
    kept = prompt.removeprefix("The sound of ").removesuffix(", as heard in real life")
    words = LONG_CAPTION.split()
    n = len(kept.split())
    assert kept.split() == [words[0].lower(), *words[1:n]]
    assert fits(prompt) and not fits(prompt_from_caption(" ".join(words[:n + 1]), TEMPLATE))
    assert LONG_CAPTION.startswith(by_prompt.prompt) and fits(by_prompt.prompt)
    assert len(by_prompt.prompt) < len(LONG_CAPTION)
    for result, seed in ((by_caption, 5), (by_prompt, 6)):
        direct = clips(tiny_pipeline.generator, [result.prompt], [seed], OPTIONS)[0]
        np.testing.assert_allclose(result.audio, direct, atol=1e-5, rtol=0)


def test_template_longer_than_the_window_still_renders(tiny_pipeline: Pipeline) -> None:
    wordy = Pipeline(None, tiny_pipeline.generator,
                     prompt_template="A field recording, in stereo, of exactly what one would "
                                     "hear standing right there: {caption}, nothing else at all")
    (result,) = wordy.run([PipelineInput(caption="A dog barking.", seed=1)], OPTIONS)
    assert wordy.generator.prompt_fits(result.prompt)
    assert result.prompt.startswith("A field recording, in stereo")
    assert result.audio.shape == (16000,)
