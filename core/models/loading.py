"""Model loading: pick the device, load each model once per loader, build tiny test models."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

from core.config import Config, GenerationConfig, ModelsConfig
from core.models.backends import BACKENDS
from core.models.captioner import Captioner
from core.models.clap import DEFAULT_CLAP, ClapScorer, LazyScorer
from core.models.hub import disable_progress_bars, go_offline_without_network
from core.models.pipeline import Pipeline
from core.models.precision import choose_precision
from core.models.sound import SoundGenerator, auto_candidates
from core.models.tiny.clap import build_tiny_clap
from core.models.tiny.coca import build_tiny_coca

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/sonify")


def cache_root(models: ModelsConfig) -> Path:
    """`[models] cache_dir`, or ~/.cache/sonify."""
    return Path(models.cache_dir or DEFAULT_CACHE).expanduser()


def tiny_models(models: ModelsConfig) -> ModelsConfig:
    """Build (once) the tiny random models and point `models` at their folders."""
    root = cache_root(models) / "tiny"
    coca, sound = build_tiny_coca(root), BACKENDS[models.sound_backend].build_tiny(root)
    return replace(models, caption_path=str(coca), sound_model=str(sound),
                   clap_model=str(build_tiny_clap(root)))


class ModelLoader:
    """Loads the models one `Config` names, each on first use, and keeps them.

    Loading takes seconds to minutes and gigabytes: whoever wants to share loaded models
    keeps this loader (or the Pipeline it returns). Nothing is cached at module level: two
    loaders never share a model, and the models go once no loader or Pipeline holds them.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        models = config.models
        self.precision = choose_precision(models.device, models.dtype,
                                          test_models=models.preset == "tiny")
        self.device, self.dtype = self.precision.device, self.precision.dtype
        logger.info("%s", self.precision.describe())
        # The model thread and a caller may ask at once; loading twice would double the memory.
        self._lock = threading.RLock()
        self._models: ModelsConfig | None = None
        self._captioner: Captioner | None = None
        self._sound_generator: SoundGenerator | None = None
        self._clap: ClapScorer | None = None
        self._pipelines: dict[tuple[int, int, str], Pipeline] = {}

    def models(self) -> ModelsConfig:
        """`[models]` as loaded: under preset 'tiny', pointed at the tiny models (built once)."""
        with self._lock:
            if self._models is None:
                disable_progress_bars()  # a bot's log is no terminal: no bars while loading
                models = self.config.models
                if models.preset != "tiny":
                    go_offline_without_network()
                if models.preset == "tiny":
                    models = tiny_models(models)
                    logger.warning(
                        "!!! [models] preset = 'tiny': RANDOM-WEIGHT TEST MODELS. Captions are "
                        "junk and every clip is NOISE. Use preset = 'default' for real output. !!!")
                self._models = models
            return self._models

    def captioner(self, generation: GenerationConfig | None = None) -> Captioner:
        """The CoCa captioner with `generation`'s decoding settings (default: the config's)."""
        if generation is None:
            generation = self.config.generation
        with self._lock:
            if self._captioner is None:
                self._captioner = Captioner.from_config(self.models(), generation, self.device,
                                                        self.dtype)
            loaded = self._captioner
        if (loaded.beams, loaded.max_tokens) == (generation.caption_beams,
                                                 generation.caption_max_tokens):
            return loaded
        # Decoding settings live on the wrapper: share the loaded model, don't load it again.
        return loaded.with_settings(beams=generation.caption_beams,
                                    max_tokens=generation.caption_max_tokens)

    def clap_scorer(self) -> ClapScorer:
        """The CLAP model of `[models] clap_model` (ranks takes, measures fit), loaded once."""
        with self._lock:
            if self._clap is None:
                models = self.models()
                self._clap = ClapScorer.from_pretrained(
                    models.clap_model or DEFAULT_CLAP, device=self.device, dtype=self.dtype,
                    cache_dir=models.cache_dir or None)
            return self._clap

    def sound_generator(self) -> SoundGenerator:
        """The sound generator of `[models] sound_backend`, with a CLAP to pick the best take.

        Backends without their own CLAP audio tower get `[models] clap_model`: at start-up when
        the configured `candidates` renders several takes here (a missing CLAP is then a
        start-up error), else on the first request that asks for several.
        """
        with self._lock:
            if self._sound_generator is None:
                models = self.models()
                scorer = None if BACKENDS[models.sound_backend].has_own_clap else \
                    LazyScorer(self.clap_scorer)
                generator = SoundGenerator.from_config(models, self.device, self.dtype,
                                                       scorer=scorer)
                if scorer is not None and (self.config.generation.candidates
                                           or auto_candidates(self.device)) > 1:
                    scorer.get()
                self._sound_generator = generator
            return self._sound_generator

    def pipeline(self, generation: GenerationConfig | None = None) -> Pipeline:
        """The Pipeline for `generation` (default: the config's); ModelMissingError if absent.

        The same settings give the same Pipeline object; other decoding settings or another
        prompt template give another Pipeline over the same loaded models.
        """
        if generation is None:
            generation = self.config.generation
        key = (generation.caption_beams, generation.caption_max_tokens,
               generation.prompt_template)
        with self._lock:
            if key not in self._pipelines:
                captioner = self.captioner(generation)
                self._pipelines[key] = Pipeline(captioner, self.sound_generator(),
                                                prompt_template=generation.prompt_template)
            return self._pipelines[key]
