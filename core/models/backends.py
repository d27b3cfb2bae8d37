"""What differs between the sound models: how a batch is rendered, and what each one reads.

Each backend turns a batch of prompts (each repeated once per take, one seeded generator per
take) into float32 clips shaped (takes, channels, samples) in ONE pipeline call, in such a way
that a take does not depend on its neighbours in the batch.

A backend is this class plus its entry in `core/sound_backends.py` (README: "Adding a sound
backend"); defining a class that names an entry registers it in `BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import diffusers
import numpy as np
import torch

from core.models import context_cache
from core.models.clap import ClapScorer
from core.models.tiny.audioldm import build_tiny_audioldm, build_tiny_audioldm2
from core.models.tiny.stable_audio3 import build_tiny_stable_audio3
from core.options import GenerationOptions
from core.sound_backends import SOUND_BACKENDS, SoundBackend

SCHEDULERS = {"ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler"}
# Stable Audio 3 reads at most this many text tokens, whatever its tokenizer says.
STABLE_AUDIO3_TEXT_TOKENS = 256

StepFn = Callable[[int], None]  # called with the 0-based index of each finished step

# The class of every backend, by its `[models] sound_backend` name (filled as classes are defined).
BACKENDS: dict[str, type[Backend]] = {}


class Backend:
    """A diffusers pipeline of one family, rendered in batches.

    A concrete backend sets `entry` (its `SOUND_BACKENDS` entry: name, pipeline class, default
    model, defaults) and `build_tiny`; it then renders any pipeline of that class.
    """

    entry: ClassVar[SoundBackend]
    has_own_clap: ClassVar[bool] = False  # a CLAP audio tower in the pipeline, to rank takes

    @staticmethod
    def build_tiny(root: Path) -> Path:
        """Build (once) a tiny random-weight pipeline of this class under `root`; its folder.

        For tests and `preset = "tiny"`: the real loading code runs on it, offline.
        """
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "entry" in cls.__dict__:
            if cls.entry.name in BACKENDS:
                raise TypeError(f"two backend classes for {cls.entry.name!r}")
            BACKENDS[cls.entry.name] = cls

    def __init__(self, pipe: Any, device: torch.device, dtype: torch.dtype) -> None:
        self.pipe, self.device, self.dtype = pipe, device, dtype

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vocoder.config.sampling_rate)

    @property
    def channels(self) -> int:
        return 1

    def text_windows(self) -> list[tuple[Any, int]]:
        """(tokenizer, most tokens its encoder reads) for every text encoder that truncates."""
        return [(tok, int(tok.model_max_length))
                for tok in (getattr(self.pipe, "tokenizer", None),
                            getattr(self.pipe, "tokenizer_2", None))
                if tok is not None and int(tok.model_max_length) < 100_000]

    def own_scorer(self) -> ClapScorer | None:
        """The pipeline's own CLAP, if it has an audio tower to rank takes with."""
        return None

    def use_scheduler(self, name: str) -> None:
        """Switch the sampler for the next call (the AudioLDM family); others keep theirs."""

    def render(self, prompts: list[str], takes: int, generators: list[torch.Generator],
               options: GenerationOptions, on_step: StepFn) -> np.ndarray:
        raise NotImplementedError


class _AudioLDMFamily(Backend):
    def __init__(self, pipe: Any, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(pipe, device, dtype)
        # Every scheduler is built from the one the model shipped with, so switching never drifts.
        self._base_scheduler_config = dict(pipe.scheduler.config)
        self._schedulers: dict[str, Any] = {}

    def use_scheduler(self, name: str) -> None:
        if name not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {name!r}; use one of {', '.join(SCHEDULERS)}")
        if name not in self._schedulers:
            scheduler_cls = getattr(diffusers, SCHEDULERS[name])
            self._schedulers[name] = scheduler_cls.from_config(self._base_scheduler_config)
        self.pipe.scheduler = self._schedulers[name]

    def _inputs(self, prompts: list[str], takes: int,
                options: GenerationOptions) -> dict[str, Any]:
        batch = [p for p in prompts for _ in range(takes)]
        negative = options.negative_prompt or None
        return {"prompt": batch, "negative_prompt": [negative] * len(batch) if negative else None}

    def render(self, prompts: list[str], takes: int, generators: list[torch.Generator],
               options: GenerationOptions, on_step: StepFn) -> np.ndarray:
        # num_waveforms_per_prompt stays 1: diffusers ranks candidates across the whole batch
        # (#13602), so takes are separate batch rows, ranked per prompt by the caller.
        out = self.pipe(**self._inputs(prompts, takes, options),
                        audio_length_in_s=float(options.seconds),
                        num_inference_steps=int(options.steps),
                        guidance_scale=float(options.guidance_scale), generator=generators,
                        num_waveforms_per_prompt=1,
                        callback=lambda step, _t, _latents: on_step(step), callback_steps=1,
                        output_type="np")
        return np.asarray(out.audios, dtype=np.float32).reshape(len(generators), 1, -1)


class AudioLDM(_AudioLDMFamily):
    entry = SOUND_BACKENDS["audioldm"]
    build_tiny = staticmethod(build_tiny_audioldm)


class AudioLDM2(_AudioLDMFamily):
    entry = SOUND_BACKENDS["audioldm2"]
    build_tiny = staticmethod(build_tiny_audioldm2)
    has_own_clap = True

    def own_scorer(self) -> ClapScorer | None:
        return ClapScorer.from_pipeline(self.pipe, device=self.device, dtype=self.dtype)

    def _inputs(self, prompts: list[str], takes: int,
                options: GenerationOptions) -> dict[str, Any]:
        """Prompt embeddings encoded one prompt at a time, padded to a common length.

        AudioLDM 2 pads T5 tokens to the longest prompt *before* GPT-2 generates from them (and
        pads the negative prompt to the positive's length), so embeddings encoded as a batch depend
        on the other prompts. Encoding each prompt alone keeps a batched clip equal to a single one;
        the padding added here is masked in the UNet's cross-attention.
        """
        cfg = float(options.guidance_scale) > 1.0
        negative = options.negative_prompt or None
        parts: list[tuple[torch.Tensor, ...]] = []
        for prompt in prompts:
            embeds, mask, generated = self.pipe.encode_prompt(
                [prompt], self.device, 1, cfg, negative_prompt=[negative] if negative else None)
            parts.append((embeds, mask, generated))
        length = max(e.shape[1] for e, _, _ in parts)

        def rows(index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            embeds, masks, generated = [], [], []
            for e, m, g in parts:
                e, m = e[index:index + 1], m[index:index + 1]
                pad = length - e.shape[1]
                embeds.append(torch.nn.functional.pad(e, (0, 0, 0, pad)))
                masks.append(torch.nn.functional.pad(m, (0, pad)))
                generated.append(g[index:index + 1])
            embeds_t, masks_t, generated_t = (torch.cat(t).repeat_interleave(takes, dim=0)
                                              for t in (embeds, masks, generated))
            return embeds_t, masks_t, generated_t

        pos = 1 if cfg else 0  # encode_prompt returns cat([negative, positive]) under guidance
        inputs: dict[str, Any] = dict(zip(("prompt_embeds", "attention_mask",
                                            "generated_prompt_embeds"), rows(pos), strict=True))
        if cfg:
            inputs.update(zip(("negative_prompt_embeds", "negative_attention_mask",
                               "negative_generated_prompt_embeds"), rows(0), strict=True))
        return inputs


class StableAudio3(Backend):
    """Stable Audio 3: rectified-flow DiT over SAME latents, stereo 44.1 kHz.

    The sampler is the checkpoint's own (the distilled ones ship a stochastic flow-matching
    Euler sampler made for 8 steps), so `options.scheduler` does not apply. Guidance (and with
    it the negative prompt) is used only when `guidance_scale > 1`: the distilled checkpoints
    have it baked in, the base checkpoints need it.
    """

    entry = SOUND_BACKENDS["stable-audio-3"]
    build_tiny = staticmethod(build_tiny_stable_audio3)

    def __init__(self, pipe: Any, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(pipe, device, dtype)
        # The text context's keys/values, projected once per call rather than once per step.
        self._context_caches = context_cache.install(pipe.transformer)

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vae.config.sampling_rate)

    @property
    def channels(self) -> int:
        return int(self.pipe.vae.config.audio_channels)

    def text_windows(self) -> list[tuple[Any, int]]:
        tok = self.pipe.tokenizer
        return [(tok, min(int(tok.model_max_length), STABLE_AUDIO3_TEXT_TOKENS))]

    def render(self, prompts: list[str], takes: int, generators: list[torch.Generator],
               options: GenerationOptions, on_step: StepFn) -> np.ndarray:
        batch = [p for p in prompts for _ in range(takes)]
        guided = float(options.guidance_scale) > 1.0
        negative = options.negative_prompt if guided and options.negative_prompt else None

        def step_end(_pipe: Any, step: int, _t: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
            on_step(step)
            return {}

        try:
            out = self.pipe(prompt=batch, duration=float(options.seconds),
                            num_inference_steps=int(options.steps),
                            guidance_scale=float(options.guidance_scale),
                            negative_prompt=[negative] * len(batch) if negative else None,
                            generator=generators, callback_on_step_end=step_end,
                            output_type="np")
        finally:
            for cache in self._context_caches:
                cache.forget()
        return np.asarray(out.audios, dtype=np.float32)


def backend_for(pipe: Any, device: torch.device, dtype: torch.dtype) -> Backend:
    """The backend that renders `pipe`, chosen by its class."""
    by_class = {backend.entry.pipeline_class: backend for backend in BACKENDS.values()}
    name = type(pipe).__name__
    if name not in by_class:
        raise ValueError(f"unsupported sound pipeline {name}; use one of {', '.join(by_class)}")
    return by_class[name](pipe, device, dtype)
