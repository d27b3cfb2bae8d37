"""Text-to-sound with AudioLDM (or AudioLDM 2) through diffusers; one pipeline call per batch."""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
import transformers
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub import utils as hub_utils

from core.audio.encode import resample
from core.config import ModelsConfig
from core.errors import ConfigError, ModelMissingError
from core.models.prompt import longest_fitting
from core.models.quiet import download_problem, first_line, held_logs
from core.options import GenerationOptions

logger = logging.getLogger(__name__)

DEFAULT_MODELS = {"audioldm": "cvssp/audioldm-s-full-v2", "audioldm2": "cvssp/audioldm2"}
PIPELINE_CLASSES = {"audioldm": "AudioLDMPipeline", "audioldm2": "AudioLDM2Pipeline"}
SCHEDULERS = {"ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler"}
# Candidate j>0 of a prompt seeded `s` uses s + j * 2**32: unique, since seeds are below 2**31.
_CANDIDATE_STRIDE = 2**32

Progress = Callable[[int, int], None]

_FIX = ("set [models] sound_model to a local diffusers folder, or run with SONIFY_MODELS=tiny "
        "(random test models: noise only)")


def _hub_is_offline() -> bool:
    # Recent huggingface_hub releases answer through is_offline_mode(); older ones only
    # have the HF_HUB_OFFLINE constant.
    check = getattr(hub_constants, "is_offline_mode", None)
    return bool(check() if callable(check) else hub_constants.HF_HUB_OFFLINE)


def _missing_model_error(source: str, why: str) -> ModelMissingError:
    return ModelMissingError(f"Sound model {source!r} {why}: {_FIX}")


def load_diffusers_pipeline(backend: str, source: str, *, dtype: torch.dtype,
                            cache_dir: str | None = None) -> Any:
    """`from_pretrained` a hub id (from the cache when offline) or a local diffusers folder.

    Raises `ModelMissingError` (one line, with the fix) when the weights are not available.
    """
    cls = getattr(diffusers, PIPELINE_CLASSES[backend])
    path = Path(source).expanduser()
    local = path.is_dir() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if local:
        index = path / "model_index.json"
        if not index.is_file():
            raise _missing_model_error(
                source, "is not a diffusers pipeline folder (no model_index.json)")
        found = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
        if found != cls.__name__:
            raise ConfigError(f"[models] sound_model: {source} holds a {found}, but "
                              f"sound_backend = {backend!r} needs a {cls.__name__}")
        source = str(path)
    elif _hub_is_offline():
        if not isinstance(try_to_load_from_cache(source, "model_index.json", cache_dir=cache_dir),
                          str):
            raise _missing_model_error(source, "is not in the Hugging Face cache and downloads "
                                               "are off (HF_HUB_OFFLINE)")
    try:
        # On a failed load diffusers first warns that it cannot reach the Hub, in two lines.
        with held_logs("diffusers", "transformers"):
            return cls.from_pretrained(source, dtype=dtype, cache_dir=cache_dir)
    except Exception as exc:  # whatever the libraries raise, the user gets one line
        logger.debug("loading %s failed", source, exc_info=True)
        problem = None if local else download_problem(exc)
        if problem:
            raise _missing_model_error(source, problem) from None
        raise _missing_model_error(source, f"could not be loaded ({type(exc).__name__}: "
                                           f"{first_line(exc)})") from None


def disable_progress_bars() -> None:
    """Turn off diffusers' and transformers' loading bars (process-wide); keep download bars.

    Loading bars (one per component, every start) are for notebooks: a bot's log must stay
    readable. The Hub's download bars stay: a first real run fetches gigabytes and should
    show it. transformers switches those off along with its own, so they are switched back.
    """
    downloads_shown = not hub_utils.are_progress_bars_disabled()
    diffusers.utils.logging.disable_progress_bar()
    with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS=0 makes the hub warn here
        warnings.simplefilter("ignore")
        transformers.utils.logging.disable_progress_bar()
    if downloads_shown and hub_utils.are_progress_bars_disabled():
        hub_utils.enable_progress_bars()


class SoundGenerator:
    """Renders prompts to mono float32 clips with an AudioLDM-family diffusers pipeline."""

    def __init__(self, pipe: Any, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        # Cast only when needed: diffusers warns on `.to(dtype)` of modules loaded in another dtype.
        self.pipe = pipe.to(self.device) if pipe.dtype == dtype else pipe.to(self.device, dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.backend = "audioldm2" if type(pipe).__name__ == "AudioLDM2Pipeline" else "audioldm"
        # Every scheduler is built from the one the model shipped with, so switching never drifts.
        self._base_scheduler_config = dict(pipe.scheduler.config)
        self._schedulers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._warned_candidates = False
        # The tokenizers whose encoders truncate a prompt (AudioLDM: CLAP, 77 tokens; AudioLDM 2:
        # CLAP and T5); diffusers cuts anything longer mid-word and logs a warning each call.
        self._tokenizers = [tok for tok in (getattr(pipe, "tokenizer", None),
                                            getattr(pipe, "tokenizer_2", None))
                            if tok is not None and int(tok.model_max_length) < 100_000]

    @classmethod
    def from_config(cls, models: ModelsConfig, device: torch.device,
                    dtype: torch.dtype) -> SoundGenerator:
        """Load `[models] sound_model` (or the backend's default) onto `device` in `dtype`."""
        disable_progress_bars()
        source = models.sound_model or DEFAULT_MODELS[models.sound_backend]
        pipe = load_diffusers_pipeline(models.sound_backend, source, dtype=dtype,
                                       cache_dir=models.cache_dir or None)
        logger.info("sound model %s (%s) loaded on %s/%s", source, models.sound_backend, device,
                 str(dtype).removeprefix("torch."))
        return cls(pipe, device=device, dtype=dtype)

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vocoder.config.sampling_rate)

    def prompt_fits(self, text: str) -> bool:
        """True when every text encoder reads `text` whole, so nothing gets cut off."""
        # verbose=False: counting a long prompt must not log "Token indices sequence length".
        return all(len(tok(text, verbose=False)["input_ids"]) <= int(tok.model_max_length)
                   for tok in self._tokenizers)

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

    def _use_scheduler(self, name: str) -> None:
        if name not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {name!r}; use one of {', '.join(SCHEDULERS)}")
        if name not in self._schedulers:
            scheduler_cls = getattr(diffusers, SCHEDULERS[name])
            self._schedulers[name] = scheduler_cls.from_config(self._base_scheduler_config)
        self.pipe.scheduler = self._schedulers[name]

    def _candidate_count(self, options: GenerationOptions) -> int:
        k = max(1, int(options.waveforms_per_prompt))
        if k > 1 and self.backend != "audioldm2":
            if not self._warned_candidates:
                logger.warning("waveforms_per_prompt=%d needs AudioLDM 2 (CLAP audio ranking); "
                            "AudioLDM renders one waveform per prompt", k)
                self._warned_candidates = True
            return 1
        return k

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], options: GenerationOptions,
                 progress: Progress | None = None) -> list[np.ndarray]:
        """Render every prompt in ONE pipeline call; clip i equals what prompt i gets alone."""
        prompts, seeds = [self.fit_prompt(p) for p in prompts], [int(s) for s in seeds]
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        options = replace(options, negative_prompt=self.fit_prompt(options.negative_prompt))
        k = self._candidate_count(options)
        # Prompt-major order, one seeded CPU generator per waveform: a prompt's noise does not
        # depend on its neighbours in the batch, and CPU generators give it on any device.
        batch = [p for p in prompts for _ in range(k)]
        generators = [torch.Generator("cpu").manual_seed(s + j * _CANDIDATE_STRIDE)
                      for s in seeds for j in range(k)]
        steps = int(options.steps)

        def on_step(step: int, _timestep: Any, _latents: torch.Tensor) -> None:
            if progress is not None:
                progress(min(step + 1, steps), steps)

        with self._lock, torch.inference_mode():
            self._use_scheduler(options.scheduler)
            if self.backend == "audioldm2":
                inputs = self._audioldm2_inputs(prompts, k, options)
            else:
                negative = options.negative_prompt or None
                inputs = {"prompt": batch,
                          "negative_prompt": [negative] * len(batch) if negative else None}
            # num_waveforms_per_prompt stays 1: diffusers ranks candidates across the whole batch
            # (#13602), so candidates are separate batch rows, ranked per prompt below.
            out = self.pipe(**inputs, audio_length_in_s=float(options.seconds),
                            num_inference_steps=steps, guidance_scale=float(options.guidance_scale),
                            generator=generators, num_waveforms_per_prompt=1,
                            callback=on_step, callback_steps=1, output_type="np")
            audios = np.asarray(out.audios, dtype=np.float32).reshape(len(batch), -1)
            if k > 1:
                audios = np.stack([
                    audios[i * k + self._best_candidate(p, audios[i * k:(i + 1) * k])]
                    for i, p in enumerate(prompts)])
        n = round(float(options.seconds) * self.sample_rate)
        return [_fit_length(a, n) for a in audios]

    def _audioldm2_inputs(self, prompts: list[str], k: int,
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
            embeds_t, masks_t, generated_t = (torch.cat(t).repeat_interleave(k, dim=0)
                                              for t in (embeds, masks, generated))
            return embeds_t, masks_t, generated_t

        pos = 1 if cfg else 0  # encode_prompt returns cat([negative, positive]) under guidance
        inputs: dict[str, Any] = dict(zip(("prompt_embeds", "attention_mask",
                                            "generated_prompt_embeds"), rows(pos), strict=True))
        if cfg:
            inputs.update(zip(("negative_prompt_embeds", "negative_attention_mask",
                               "negative_generated_prompt_embeds"), rows(0), strict=True))
        return inputs

    def _best_candidate(self, prompt: str, candidates: np.ndarray) -> int:
        """Index of the candidate CLAP scores highest for `prompt` (AudioLDM 2's ranking)."""
        pipe = self.pipe
        fe = pipe.feature_extractor
        waves = [resample(c, self.sample_rate, int(fe.sampling_rate)) for c in candidates]
        inputs = pipe.tokenizer([prompt], return_tensors="pt", padding=True, truncation=True)
        inputs["input_features"] = fe(waves, return_tensors="pt",
                                      sampling_rate=fe.sampling_rate).input_features
        inputs = {key: v.to(self.device) for key, v in inputs.items()}
        inputs["input_features"] = inputs["input_features"].to(self.dtype)
        logits = pipe.text_encoder(**inputs).logits_per_text[0]
        return int(torch.argmax(logits.float()).item())


def _fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to exactly `n` samples (the pipeline rounds lengths down)."""
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if audio.shape[0] >= n:
        return audio[:n].copy()
    return np.concatenate([audio, np.zeros(n - audio.shape[0], dtype=np.float32)])
