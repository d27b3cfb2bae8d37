"""Model loading: pick the device, load each model once per process, build tiny test models."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from core.config import Config, ModelsConfig
from core.errors import ConfigError
from core.models.pipeline import Pipeline

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/sonify")

# The process-wide model cache: loading takes seconds to minutes and gigabytes, so every
# Pipeline built in this process shares the loaded modules.
_lock = threading.RLock()
_loaded: dict[tuple[Any, ...], Any] = {}


def resolve_device(name: str) -> tuple[torch.device, torch.dtype]:
    """`auto` → CUDA when available; fp16 on CUDA, fp32 on CPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"[models] device: {name!r} is not allowed; use 'auto', 'cpu' or 'cuda'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("[models] device: 'cuda' is set but torch sees no CUDA GPU; "
                              "use 'auto' or 'cpu'")
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def cache_root(models: ModelsConfig) -> Path:
    """`[models] cache_dir`, or ~/.cache/sonify."""
    return Path(models.cache_dir or DEFAULT_CACHE).expanduser()


def tiny_models(models: ModelsConfig) -> ModelsConfig:
    """Build (once) the tiny random models and point `models` at their folders."""
    from core.models.tiny.audioldm import build_tiny_audioldm, build_tiny_audioldm2
    from core.models.tiny.coca import build_tiny_coca

    root = cache_root(models) / "tiny"
    build = build_tiny_audioldm2 if models.sound_backend == "audioldm2" else build_tiny_audioldm
    coca, sound = build_tiny_coca(root), build(root)
    return replace(models, caption_path=str(coca), sound_model=str(sound))


def _once(key: tuple[Any, ...], load: Any) -> Any:
    with _lock:
        if key not in _loaded:
            _loaded[key] = load()
        return _loaded[key]


def _captioner(config: Config, device: torch.device, dtype: torch.dtype) -> Any:
    from core.models.captioner import Captioner

    m, gen = config.models, config.generation
    key = ("caption", m.caption_model, m.caption_pretrained, m.caption_path, m.cache_dir,
           str(device), dtype)
    base = _once(key, lambda: Captioner.from_config(m, gen, device, dtype))
    if (base.beams, base.max_tokens) == (gen.caption_beams, gen.caption_max_tokens):
        return base
    # Decoding settings live on the wrapper: share the loaded model, don't load it again.
    return Captioner(base.model, base.preprocess, base.tokenizer, device=device, dtype=dtype,
                     beams=gen.caption_beams, max_tokens=gen.caption_max_tokens)


def _sound(models: ModelsConfig, device: torch.device, dtype: torch.dtype) -> Any:
    from core.models.sound import SoundGenerator

    key = ("sound", models.sound_backend, models.sound_model, models.cache_dir, str(device),
           dtype)
    return _once(key, lambda: SoundGenerator.from_config(models, device, dtype))


def load_pipeline(config: Config) -> Pipeline:
    """The Pipeline for `config`; models load once per process (ModelMissingError if absent)."""
    from core.models.sound import disable_progress_bars

    device, dtype = resolve_device(config.models.device)
    disable_progress_bars()  # a bot's log is no terminal: no tqdm bars while building/loading
    models = config.models
    tiny = models.preset == "tiny"
    if tiny:
        models = tiny_models(models)
    config = replace(config, models=models)
    key = ("pipeline", models, config.generation.caption_beams,
           config.generation.caption_max_tokens, config.generation.prompt_template,
           str(device), dtype)

    def build() -> Pipeline:
        if tiny:
            logger.warning("!!! [models] preset = 'tiny': RANDOM-WEIGHT TEST MODELS. Captions are "
                        "junk and every clip is NOISE. Use preset = 'default' for real output. !!!")
        captioner = _captioner(config, device, dtype)
        generator = _sound(models, device, dtype)
        return Pipeline(captioner, generator, prompt_template=config.generation.prompt_template)

    return _once(key, build)


def clear_model_cache() -> None:
    """Forget every loaded model (tests; a reload after changing weights on disk)."""
    with _lock:
        _loaded.clear()
