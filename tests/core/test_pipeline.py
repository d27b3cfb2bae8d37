"""Pipeline: images → captions (one batched call) → prompts → sounds (one batched call)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.errors import BadRequest, ConfigError
from core.options import GenerationOptions
from core.pipeline import EMPTY_CAPTION, Pipeline, PipelineInput, prompt_from_caption

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


@pytest.mark.parametrize("caption,expected", [
    ("A dog barking.", "The sound of a dog barking, as heard in real life"),
    ("  a   cat\nmeowing ", "The sound of a cat meowing, as heard in real life"),
    ("NASA rocket launch.", "The sound of NASA rocket launch, as heard in real life"),
    ("TV playing in a room.", "The sound of TV playing in a room, as heard in real life"),
    ("iPhone ringing on a table.", "The sound of iPhone ringing on a table, as heard in real life"),
    ("Golden Gate Bridge at dusk.",
     "The sound of Golden Gate Bridge at dusk, as heard in real life"),
    ("The {weird} caption...", "The sound of the {weird} caption, as heard in real life"),
    ("", f"The sound of {EMPTY_CAPTION}, as heard in real life"),
])
def test_prompt_from_caption(caption: str, expected: str) -> None:
    assert prompt_from_caption(caption, TEMPLATE) == expected


def test_template_needs_placeholder(tiny_pipeline: Pipeline) -> None:
    with pytest.raises(ConfigError, match="prompt_template"):
        prompt_from_caption("A dog.", "The sound of it")
    with pytest.raises(ConfigError, match="prompt_template"):
        Pipeline(None, tiny_pipeline.generator, prompt_template="no placeholder")


def test_batched_images_equal_single_runs(tiny_pipeline: Pipeline) -> None:
    inputs = [PipelineInput(image=picture(i), seed=100 + i) for i in range(3)]
    batch = tiny_pipeline.run(inputs, OPTIONS)
    singles = [tiny_pipeline.run([item], OPTIONS)[0] for item in inputs]
    assert len(batch) == 3
    for got, alone in zip(batch, singles, strict=True):
        assert got.caption == alone.caption
        assert got.prompt == alone.prompt == prompt_from_caption(got.caption, TEMPLATE)
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
    assert by_image.prompt == prompt_from_caption(by_image.caption, TEMPLATE)
    direct = tiny_pipeline.generator.generate([by_prompt.prompt], [2], OPTIONS)[0]
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
