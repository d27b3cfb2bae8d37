"""Image → caption → prompt → sound, batched: one caption call and one sound call per batch."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core.errors import BadRequest, ConfigError
from core.options import GenerationOptions

if TYPE_CHECKING:
    from core.models.captioner import Captioner
    from core.models.sound import SoundGenerator

PLACEHOLDER = "{caption}"
# What an empty caption (a random test model can decode nothing) becomes in the prompt.
EMPTY_CAPTION = "a quiet scene"
_MIXED_CASE = re.compile(r"[A-Za-z]*[a-z][A-Za-z]*[A-Z]")  # iPhone, McDonald, eBay
# "A black and white photo of a train": the picture's medium is seen, not heard, and
# "the sound of a photo" sends AudioLDM the wrong way. Only the scene goes into the prompt.
_MEDIUM = re.compile(
    r"^(?:an?\s+|the\s+)?(?:(?:black[- ]and[- ]white|close[- ]up|blurry|blurred|old|vintage|"
    r"colou?r|aerial|grainy|dark|bright|low[- ]angle|wide[- ]angle)\s+)*"
    r"(?:photo(?:graph)?|picture|image|snapshot|painting|drawing|illustration|sketch|"
    r"close[- ]up|view)\s+(?:of|showing)\s+(?=\S)", re.IGNORECASE)


@dataclass
class PipelineInput:
    """One request: an image to caption, or a caption, or a ready prompt; plus its seed."""

    image: Image.Image | None = None
    caption: str | None = None
    prompt: str | None = None
    seed: int = 0


@dataclass
class PipelineResult:
    """What one input became. `timings` are the batch's stage wall times (shared by its inputs)."""

    caption: str
    prompt: str
    audio: np.ndarray
    sample_rate: int
    timings: dict[str, float] = field(default_factory=dict)


def _keeps_capital(words: list[str]) -> bool:
    """True when the first word looks like a proper noun or an acronym, not a sentence start."""
    first = words[0].strip("\"'()[]")
    core = re.sub(r"[^A-Za-z]", "", first)
    if not core or not core[0].isupper():
        return False
    if len(core) > 1 and core.isupper():  # NASA, TV, DJ's
        return True
    if first == "I" or first.startswith(("I'", "I’")) or _MIXED_CASE.match(core):
        return True
    # "Golden Gate Bridge at dusk": a capitalised second word suggests a multi-word name.
    second = re.sub(r"[^A-Za-z]", "", words[1]) if len(words) > 1 else ""
    return bool(second) and second[0].isupper()


def longest_fitting(count: int, fits: Callable[[int], bool]) -> int:
    """The largest n in 0..count with fits(n), by bisection (fits grows false with n)."""
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def prompt_from_caption(caption: str, template: str) -> str:
    """Put a caption into `template` ("{caption}" placeholder) as a mid-sentence phrase."""
    if PLACEHOLDER not in template:
        raise ConfigError(f"[generation] prompt_template must contain {PLACEHOLDER}: {template!r}")
    text = _MEDIUM.sub("", " ".join(caption.split())).rstrip(" .,;:").strip()
    if not text:
        text = EMPTY_CAPTION
    words = text.split(" ")
    if not _keeps_capital(words):
        text = text[0].lower() + text[1:]
    # str.replace, not str.format: a caption with braces must not break the template.
    return " ".join(template.replace(PLACEHOLDER, text).split())


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

        AudioLDM's text encoder reads 77 tokens; diffusers would cut a longer prompt mid-word,
        template ending included, and log a warning every time. Cutting the caption keeps the
        template whole, and the prompt recorded is the one rendered.
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

    def run(self, inputs: Sequence[PipelineInput], options: GenerationOptions,
            progress: Callable[[int, int], None] | None = None) -> list[PipelineResult]:
        """Caption every image in one call, then render every prompt in one call."""
        inputs = list(inputs)
        for i, item in enumerate(inputs):
            if item.image is None and not (item.caption or "").strip() \
                    and not (item.prompt or "").strip():
                raise BadRequest(f"input {i} has no image, caption or prompt", code="bad_option")
        started = time.perf_counter()
        to_caption = [i for i, item in enumerate(inputs)
                      if not (item.prompt or "").strip() and not (item.caption or "").strip()]
        captions = [(item.caption or "").strip() for item in inputs]
        for i, text in zip(to_caption, self.captions([inputs[i].image for i in to_caption]),
                           strict=True):
            captions[i] = text
        caption_s = time.perf_counter() - started
        prompts = [self.generator.fit_prompt(item.prompt) if (item.prompt or "").strip()
                   else self.prompt_for(captions[i]) for i, item in enumerate(inputs)]
        started = time.perf_counter()
        audios = self.generator.generate(prompts, [item.seed for item in inputs], options,
                                         progress=progress)
        sound_s = time.perf_counter() - started
        timings = {"caption_s": caption_s, "sound_s": sound_s, "batch_size": float(len(inputs))}
        return [PipelineResult(caption=captions[i], prompt=prompts[i], audio=audios[i],
                               sample_rate=self.generator.sample_rate, timings=dict(timings))
                for i in range(len(inputs))]
