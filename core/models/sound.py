"""Text-to-sound through diffusers (AudioLDM, AudioLDM 2, Stable Audio 3): one call per batch.

Every request can render several takes per prompt in the same batch; a CLAP model scores
each take against its prompt and the best one is kept (best of N).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from core.config import ModelsConfig
from core.models.backends import Backend, backend_for
from core.models.clap import Scorer
from core.models.hub import disable_progress_bars, load_diffusers_pipeline
from core.models.prompt import longest_fitting
from core.options import GenerationOptions
from core.sound_backends import SOUND_BACKENDS

logger = logging.getLogger(__name__)

__all__ = ["SoundGenerator", "Take", "auto_candidates", "sound_dtype", "take_seed"]

# torch's CPU generator keeps only the low 32 bits of a seed (s and s + 2**32 give the same
# noise), so take j of a prompt steps through 32-bit seeds by an odd stride: the takes of one
# prompt never share a seed, and take 0 is the seed itself (one take = the seed alone).
_TAKE_STRIDE = 0x9E3779B9
# `candidates = 0` (auto): one take on a CPU, where each take costs its full render time; three
# on a GPU, where the takes share the batch (bench/fit_bench.py measures the trade-off).
AUTO_CANDIDATES = {"cpu": 1, "cuda": 3}

Progress = Callable[[int, int], None]


def take_seed(seed: int, take: int) -> int:
    """The seed of take `take` (0-based) of a prompt seeded `seed`."""
    return (int(seed) + take * _TAKE_STRIDE) % 2**32


def auto_candidates(device: torch.device) -> int:
    """Takes per prompt when the request leaves it to the machine (`candidates = 0`)."""
    return AUTO_CANDIDATES.get(device.type, 1)


def sound_dtype(backend: str, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype a backend runs in: bf16 instead of fp16 where its entry asks and the GPU can.

    bf16 keeps fp32's range at fp16's cost on Ampere and later (`bf16_over_fp16`: models whose
    activations overflow in fp16, such as Stable Audio 3's Gemma text encoder).
    """
    if SOUND_BACKENDS[backend].bf16_over_fp16 and dtype == torch.float16 \
            and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return dtype


@dataclass
class Take:
    """The kept take of one prompt: its audio and, if takes were ranked, its CLAP score."""

    audio: np.ndarray
    score: float | None = None


class SoundGenerator:
    """Renders prompts to float32 clips: 1-D for mono models, (channels, samples) for stereo."""

    def __init__(self, pipe: Any, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, scorer: Scorer | None = None) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        # Cast only when needed: diffusers warns on `.to(dtype)` of modules loaded in another dtype.
        self.pipe = pipe.to(self.device) if pipe.dtype == dtype else pipe.to(self.device, dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.backend: Backend = backend_for(self.pipe, self.device, dtype)
        # An injected scorer wins; otherwise the pipeline's own CLAP, if it has one.
        self.scorer: Scorer | None = scorer if scorer is not None else self.backend.own_scorer()
        self._lock = threading.Lock()
        self._warned_candidates = False

    @classmethod
    def from_config(cls, models: ModelsConfig, device: torch.device, dtype: torch.dtype, *,
                    scorer: Scorer | None = None) -> SoundGenerator:
        """Load `[models] sound_model` (or the backend's default) onto `device`."""
        disable_progress_bars()
        backend = models.sound_backend
        dtype = sound_dtype(backend, device, dtype)
        source = models.sound_model or SOUND_BACKENDS[backend].default_model
        pipe = load_diffusers_pipeline(backend, source, dtype=dtype,
                                       cache_dir=models.cache_dir or None)
        logger.info("sound model %s (%s) loaded on %s/%s", source, backend, device,
                    str(dtype).removeprefix("torch."))
        return cls(pipe, device=device, dtype=dtype, scorer=scorer)

    @property
    def sample_rate(self) -> int:
        return self.backend.sample_rate

    @property
    def channels(self) -> int:
        return self.backend.channels

    def prompt_fits(self, text: str) -> bool:
        """True when every text encoder reads `text` whole, so nothing gets cut off."""
        # verbose=False: counting a long prompt must not log "Token indices sequence length".
        return all(len(tok(text, verbose=False)["input_ids"]) <= limit
                   for tok, limit in self.backend.text_windows())

    def fit_prompt(self, text: str) -> str:
        """`text` cut after the last whole word the text encoders read (else left as it is)."""
        text = text.strip()
        if self.prompt_fits(text):
            return text
        words = text.split()
        n = longest_fitting(len(words), lambda k: self.prompt_fits(" ".join(words[:k])))
        if n:
            return " ".join(words[:n]).rstrip(" ,;:")
        # One "word" longer than the encoder's window (a pasted hash, say): cut it by characters.
        n = longest_fitting(len(words[0]), lambda k: self.prompt_fits(words[0][:k]))
        return words[0][:n]

    def candidate_count(self, options: GenerationOptions) -> int:
        """Takes rendered per prompt for `options` on this machine."""
        k = int(options.candidates) or auto_candidates(self.device)
        if k > 1 and self.scorer is None:
            if not self._warned_candidates:
                logger.warning("candidates=%d needs a CLAP model to pick the best take and none "
                               "is loaded; rendering one take per prompt", k)
                self._warned_candidates = True
            return 1
        return k

    def render(self, prompts: Sequence[str], seeds: Sequence[int], options: GenerationOptions,
               progress: Progress | None = None) -> list[Take]:
        """Render every prompt in ONE pipeline call (clip i equals what prompt i gets alone),
        with each kept take's CLAP score (None when one take was made)."""
        prompts, seeds = [self.fit_prompt(p) for p in prompts], [int(s) for s in seeds]
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        options = replace(options, negative_prompt=self.fit_prompt(options.negative_prompt))
        k = self.candidate_count(options)
        # Prompt-major order, one seeded CPU generator per take: a take's noise does not depend
        # on its neighbours in the batch, and CPU generators give it on any device.
        generators = [torch.Generator("cpu").manual_seed(take_seed(s, j))
                      for s in seeds for j in range(k)]
        steps = int(options.steps)

        def on_step(step: int) -> None:
            if progress is not None:
                progress(min(step + 1, steps), steps)

        with self._lock, torch.inference_mode():
            self.backend.use_scheduler(options.scheduler)
            audios = self.backend.render(prompts, k, generators, options, on_step)
        n = round(float(options.seconds) * self.sample_rate)
        clips = [_fit_length(a, n) for a in audios]
        if k == 1:
            return [Take(clip) for clip in clips]
        return self._keep_best(prompts, clips, k)

    def _keep_best(self, prompts: list[str], clips: list[np.ndarray], k: int) -> list[Take]:
        """Per prompt, the take CLAP scores highest against it (the first one on a tie)."""
        if self.scorer is None:  # candidate_count renders one take without a scorer
            raise RuntimeError("ranking takes needs a scorer")
        texts = [p for p in prompts for _ in range(k)]
        scores = self.scorer.score(texts, clips, self.sample_rate)
        kept = []
        for i in range(len(prompts)):
            own = scores[i * k:(i + 1) * k]
            best = int(np.argmax(own))
            kept.append(Take(clips[i * k + best], float(own[best])))
        return kept


def _fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """(channels, samples) trimmed or zero-padded to exactly `n` samples; 1-D when mono.

    The pipelines round lengths down (to a whole hop or latent).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.shape[-1] >= n:
        audio = audio[..., :n]
    else:
        audio = np.concatenate(
            [audio, np.zeros((*audio.shape[:-1], n - audio.shape[-1]), dtype=np.float32)], axis=-1)
    audio = np.ascontiguousarray(audio)
    return audio[0].copy() if audio.shape[0] == 1 else audio.copy()
