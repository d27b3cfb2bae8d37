"""CLAP similarity between texts and clips: picks the best take, measures how well sound fits.

A CLAP model embeds text and audio in one space; the cosine of the two embeddings says how
well a clip matches a description. AudioLDM 2 carries a whole CLAP model; AudioLDM only its
text tower and Stable Audio 3 none, so those rank takes with a separate CLAP
(`laion/clap-htsat-unfused` by default), loaded once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

from core.audio.encode import resample, to_mono
from core.errors import ModelMissingError
from core.models.hub import is_hub_id, offline_and_not_cached, why_not_loaded
from core.models.quiet import held_logs

logger = logging.getLogger(__name__)

DEFAULT_CLAP = "laion/clap-htsat-unfused"
_FIX = ("set [models] clap_model to a local folder (a transformers ClapModel with its "
        "tokenizer and feature extractor), set [generation] candidates = 1, or run with "
        "SONIFY_MODELS=tiny (random test models: noise only)")


class Scorer(Protocol):
    """Scores clips against texts; higher means a better match."""

    def score(self, texts: Sequence[str], audios: Sequence[np.ndarray], rate: int
              ) -> list[float]:
        """One score per (text, clip) pair; `audios` are mono or stereo clips at `rate`."""
        ...


def _pooled(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output (pooler_output); 4.x the projected tensor itself.
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(tensor.float(), dim=-1)


class ClapScorer:
    """Cosine similarity between CLAP text and audio embeddings, in [-1, 1]."""

    def __init__(self, model: Any, tokenizer: Any, feature_extractor: Any, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(self.device, dtype).eval()
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self._lock = threading.Lock()

    @classmethod
    def from_pipeline(cls, pipe: Any, *, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> ClapScorer | None:
        """The pipeline's own CLAP (AudioLDM 2 ranks with it), or None if it has no audio tower."""
        model = getattr(pipe, "text_encoder", None)
        fe = getattr(pipe, "feature_extractor", None)
        if not isinstance(model, ClapModel) or fe is None:
            return None
        return cls(model, pipe.tokenizer, fe, device=device, dtype=dtype)

    @classmethod
    def from_pretrained(cls, source: str, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32,
                        cache_dir: str | None = None) -> ClapScorer:
        """A hub id or folder holding a ClapModel, its tokenizer and feature extractor.

        Raises `ModelMissingError` (one line, with the fix) when it cannot be loaded.
        """
        source = source or DEFAULT_CLAP
        path = Path(source).expanduser()
        local = not is_hub_id(source)
        if local and not (path / "config.json").is_file():
            raise ModelMissingError(f"CLAP model {source!r} is not a transformers model folder "
                                    f"(no config.json): {_FIX}")
        if not local and offline_and_not_cached(source, "config.json", cache_dir):
            raise ModelMissingError(f"CLAP model {source!r} is not in the Hugging Face cache "
                                    f"and downloads are off (HF_HUB_OFFLINE): {_FIX}")
        where = str(path) if local else source
        try:
            with held_logs("transformers"):
                model = ClapModel.from_pretrained(where, cache_dir=cache_dir)
                tokenizer = AutoTokenizer.from_pretrained(where, cache_dir=cache_dir)
                fe = ClapFeatureExtractor.from_pretrained(where, cache_dir=cache_dir)
        except Exception as exc:  # whatever transformers raises, the user gets one line
            logger.debug("loading CLAP %s failed", source, exc_info=True)
            why = why_not_loaded(exc, local)
            raise ModelMissingError(f"CLAP model {source!r} {why}: {_FIX}") from None
        logger.info("CLAP model %s loaded on %s", source, torch.device(device))
        return cls(model, tokenizer, fe, device=device, dtype=dtype)

    def _features(self, wave: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Input features of one clip, and whether it is longer than the CLAP window.

        One clip at a time, with the random crops of long clips seeded: the feature extractor
        marks a random clip of a batch as "longer" when none is, which would make a score
        depend on the other clips and on chance.
        """
        fe = self.feature_extractor
        state = np.random.get_state()
        np.random.seed(0)
        try:
            out = fe([wave], sampling_rate=fe.sampling_rate, return_tensors="pt")
        finally:
            np.random.set_state(state)
        longer = torch.tensor([[wave.shape[-1] > int(fe.nb_max_samples)]])
        return out["input_features"], longer

    def score(self, texts: Sequence[str], audios: Sequence[np.ndarray], rate: int
              ) -> list[float]:
        """Cosine similarity of each text with its clip (all texts, all clips: one pass each)."""
        if len(texts) != len(audios):
            raise ValueError(f"{len(texts)} texts but {len(audios)} clips")
        if not texts:
            return []
        unique = list(dict.fromkeys(texts))
        target = int(self.feature_extractor.sampling_rate)
        features = [self._features(resample(to_mono(a), rate, target)) for a in audios]
        with self._lock, torch.inference_mode():
            tokens = self.tokenizer(unique, padding=True, truncation=True, return_tensors="pt")
            text = _pooled(self.model.get_text_features(**tokens.to(self.device)))
            audio = _pooled(self.model.get_audio_features(
                input_features=torch.cat([f for f, _ in features]).to(self.device, self.dtype),
                is_longer=torch.cat([longer for _, longer in features]).to(self.device)))
        rows = text[[unique.index(t) for t in texts]]
        return [float(x) for x in (rows * audio).sum(dim=-1).cpu()]


class LazyScorer:
    """A scorer loaded on first use: rendering one take per prompt never loads CLAP."""

    def __init__(self, load: Callable[[], Scorer]) -> None:
        self._load = load
        self._scorer: Scorer | None = None
        self._lock = threading.Lock()

    def get(self) -> Scorer:
        with self._lock:
            if self._scorer is None:
                self._scorer = self._load()
            return self._scorer

    def score(self, texts: Sequence[str], audios: Sequence[np.ndarray], rate: int
              ) -> list[float]:
        return self.get().score(texts, audios, rate)
