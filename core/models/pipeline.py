"""Image → caption → prompt → sound, batched: one caption call and one sound call per batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core.errors import BadRequest, ConfigError
from core.models.frames import clip_caption_parts, joined
from core.models.prompt import PLACEHOLDER, longest_fitting, prompt_from_caption
from core.options import GenerationOptions

if TYPE_CHECKING:  # both import torch: the job engine imports this module without it
    from core.models.captioner import Captioner
    from core.models.sound import SoundGenerator


@dataclass
class PipelineInput:
    """One request: an image to caption, or a caption, or a ready prompt; plus its seed.

    `frames`: a moving picture's frames, captioned in the same batch as the pictures and
    made into one caption and one prompt (core/models/frames.py); a caption or a prompt
    given with them wins.
    """

    image: Image.Image | None = None
    caption: str | None = None
    prompt: str | None = None
    seed: int = 0
    frames: Sequence[Image.Image] | None = None


@dataclass
class PipelineResult:
    """What one input became. `timings` are the batch's stage wall times (shared by its inputs).

    `audio` is float32, 1-D (mono) or (channels, samples) (stereo models). `score` is the CLAP
    cosine similarity (-1..1) between the kept take and `prompt` when several takes were
    rendered and ranked (`candidates` > 1); None when only one take was made.
    """

    caption: str
    prompt: str
    audio: np.ndarray
    sample_rate: int
    timings: dict[str, float] = field(default_factory=dict)
    score: float | None = None


class Pipeline:
    """Captioner + sound generator + prompt template; renders batches of inputs."""

    def __init__(self, captioner: Captioner | None, generator: SoundGenerator, *,
                 prompt_template: str) -> None:
        if PLACEHOLDER not in prompt_template:
            raise ConfigError(f"[generation] prompt_template must contain {PLACEHOLDER}: "
                              f"{prompt_template!r}")
        self.captioner = captioner
        self.generator = generator
        self.prompt_template = prompt_template

    @property
    def sample_rate(self) -> int:
        return self.generator.sample_rate

    def captions(self, images: Sequence[Image.Image]) -> list[str]:
        """Caption images in one batched call."""
        if not images:
            return []
        if self.captioner is None:
            raise BadRequest("this pipeline has no caption model; send a caption or a prompt",
                             code="bad_option")
        return self.captioner.caption(list(images))

    def prompt_for(self, caption: str) -> str:
        """The template around `caption`, shortened word by word to what the sound model reads.

        AudioLDM's text encoder reads 77 tokens, Stable Audio 3's 256; diffusers would cut a
        longer prompt mid-word, template ending included, and log a warning every time. Cutting
        the caption keeps the template whole, and the prompt recorded is the one rendered.
        """
        prompt = prompt_from_caption(caption, self.prompt_template)
        fits = self.generator.prompt_fits
        if fits(prompt):
            return prompt
        words = caption.split()
        n = longest_fitting(len(words), lambda k: fits(
            prompt_from_caption(" ".join(words[:k]), self.prompt_template)))
        if n:
            return prompt_from_caption(" ".join(words[:n]), self.prompt_template)
        return self.generator.fit_prompt(prompt)  # the template alone is too long

    def clip_prompt_for(self, shown: str, extra: Sequence[str]) -> str:
        """The prompt of a clip: its medoid caption, then what later frames add — as much of
        that as the text encoder reads, dropping the last frames' words first."""
        words = [phrase.split() for phrase in extra]
        flat = [(k, w) for k, phrase in enumerate(words) for w in phrase]

        def text(n: int) -> str:
            kept: list[list[str]] = [[] for _ in words]
            for k, w in flat[:n]:
                kept[k].append(w)
            return joined(shown, [" ".join(p) for p in kept if p])

        fits = self.generator.prompt_fits
        n = longest_fitting(len(flat), lambda k: fits(
            prompt_from_caption(text(k), self.prompt_template)))
        if n == 0:
            return self.prompt_for(shown)
        return prompt_from_caption(text(n), self.prompt_template)

    def run(self, inputs: Sequence[PipelineInput], options: GenerationOptions,
            progress: Callable[[int, int], None] | None = None) -> list[PipelineResult]:
        """Caption every image in one call, then render every prompt in one call."""
        inputs = list(inputs)
        for i, item in enumerate(inputs):
            if item.image is None and not item.frames and not (item.caption or "").strip() \
                    and not (item.prompt or "").strip():
                raise BadRequest(f"input {i} has no image, caption or prompt", code="bad_option")
        started = time.perf_counter()
        # (index, images) of the inputs with neither prompt nor caption: a picture, or a
        # clip's frames. All of them go to the captioner in one call.
        to_caption: list[tuple[int, list[Image.Image]]] = []
        for i, item in enumerate(inputs):
            if (item.prompt or "").strip() or (item.caption or "").strip():
                continue
            if item.frames:
                to_caption.append((i, list(item.frames)))
            elif item.image is not None:
                to_caption.append((i, [item.image]))
        texts = iter(self.captions([image for _, images in to_caption for image in images]))
        captions = [(item.caption or "").strip() for item in inputs]
        frame_words: dict[int, list[str]] = {}
        for i, images in to_caption:
            mine = [next(texts) for _ in images]
            if len(mine) == 1:
                captions[i] = mine[0]
            else:
                captions[i], frame_words[i] = clip_caption_parts(mine)
        caption_s = time.perf_counter() - started
        prompts = [self.generator.fit_prompt(item.prompt) if item.prompt and item.prompt.strip()
                   else self.clip_prompt_for(captions[i], frame_words[i]) if frame_words.get(i)
                   else self.prompt_for(captions[i]) for i, item in enumerate(inputs)]
        started = time.perf_counter()
        takes = self.generator.render(prompts, [item.seed for item in inputs], options,
                                      progress=progress)
        sound_s = time.perf_counter() - started
        timings = {"caption_s": caption_s, "sound_s": sound_s, "batch_size": float(len(inputs))}
        return [PipelineResult(caption=captions[i], prompt=prompts[i], audio=takes[i].audio,
                               sample_rate=self.generator.sample_rate, timings=dict(timings),
                               score=takes[i].score)
                for i in range(len(inputs))]
