"""Image captions with CoCa (open_clip), decoded by our own greedy and beam search.

open_clip 3.3.0's `CoCa.generate()` needs `BeamSearchScorer`, which current transformers
no longer has, so decoding runs here over the CoCa modules: the image is encoded once and
each step feeds one token per live row to the cached decoder (caption_decoder.py), which
returns the next-token logits of every row.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.coca_model import CoCa
from PIL import Image

from core.config import GenerationConfig, ModelsConfig
from core.errors import ConfigError, ModelMissingError
from core.models.beam_search import BeamSearchState
from core.models.caption_decoder import CachedCoCaDecoder, DecodeState, StepDecoder
from core.models.quiet import download_problem, first_line, held_logs

logger = logging.getLogger(__name__)

SOT_ID = 49406  # open_clip SimpleTokenizer's <start_of_text>
EOT_ID = 49407  # ... and <end_of_text>
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_FIX = ("set [models] caption_path to a local open_clip folder (open_clip_config.json + "
        "open_clip_model.safetensors), or use the test models with SONIFY_MODELS=tiny.")

_END = re.compile(r"<end_of_text>|<\|endoftext\|>")
_SPECIAL = re.compile(r"<start_of_text>|<\|startoftext\|>|<pad>|</w>")
_CONTRACTION = re.compile(r"\s+'(s|t|re|ve|m|ll|d)\b")


def clean_caption(text: str) -> str:
    """Turn decoded CoCa text into a sentence: no special tokens, tidy punctuation, final period."""
    text = _END.split(text, maxsplit=1)[0]
    text = " ".join(_SPECIAL.sub(" ", text).split())
    # SimpleTokenizer decodes every token with a trailing space: "a dog 's toy ." etc.
    text = re.sub(r"\s+([.,!?;:%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{])\s+", r"\1", text)
    text = _CONTRACTION.sub(r"'\1", text)
    text = re.sub(r"(?<=\w) - (?=\w)", "-", text)
    text = re.sub(r'"\s*([^"]*?)\s*"', r'"\1"', text)
    text = re.sub(r"([.,!?;:])\1+", r"\1", text)
    text = re.sub(r"[,;:]+(?=[.!?])", "", text)
    text = text.strip(" ,;:-").lstrip(".!?").strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


class Captioner:
    """Caption PIL images with a CoCa model; batched greedy or beam-search decoding.

    Precision: fp32 as it is; half precision on CUDA as autocast over fp32 weights; half
    precision elsewhere (bf16 on a CPU) with the weights held in that dtype, since CPU
    autocast casts every weight on every call. `autocast` overrides that choice.
    """

    def __init__(self, model: CoCa, preprocess: Any, tokenizer: Any, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 beams: int = 6, max_tokens: int = 30, min_tokens: int = 4,
                 length_penalty: float = 1.0, decoder: StepDecoder | None = None,
                 autocast: bool | None = None) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        half = dtype in (torch.float16, torch.bfloat16)
        self.autocast = half and (self.device.type == "cuda" if autocast is None else autocast)
        # The weights' dtype: a Captioner sharing an already cast model casts nothing.
        self.weights_dtype = dtype if half and not self.autocast else torch.float32
        self.model = model.to(self.device, self.weights_dtype).eval()
        self.decoder = decoder if decoder is not None else CachedCoCaDecoder(self.model)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.beams = _positive_int("beams", beams)
        self.max_tokens = _positive_int("max_tokens", max_tokens)
        # Like open_clip's generate (min_seq_len=5 counting the start token): no empty
        # or two-word captions; a real CoCa almost never wants to stop that early.
        self.min_tokens = min_tokens
        self.length_penalty = length_penalty
        self.sot_id = int(getattr(tokenizer, "sot_token_id", SOT_ID))
        self.eot_id = int(getattr(tokenizer, "eot_token_id", EOT_ID))
        self.context_length = int(getattr(model, "context_length", 76))

    @classmethod
    def from_config(cls, models: ModelsConfig, generation: GenerationConfig,
                    device: torch.device, dtype: torch.dtype) -> Captioner:
        """Load CoCa from `[models] caption_path` or by name + pretrained tag (HF hub cache)."""
        model, preprocess, tokenizer = _load_open_clip(models, device)
        return cls(model, preprocess, tokenizer, device=device, dtype=dtype,
                   beams=generation.caption_beams, max_tokens=generation.caption_max_tokens)

    def with_settings(self, *, beams: int, max_tokens: int) -> Captioner:
        """Another Captioner over the same loaded model and decoder, decoding differently."""
        return Captioner(self.model, self.preprocess, self.tokenizer, device=self.device,
                         dtype=self.dtype, beams=beams, max_tokens=max_tokens,
                         min_tokens=self.min_tokens, length_penalty=self.length_penalty,
                         decoder=self.decoder, autocast=self.autocast)

    # -- public API -------------------------------------------------------------------

    def caption(self, images: Sequence[Image.Image], *, beams: int | None = None,
                max_tokens: int | None = None) -> list[str]:
        """Caption all `images` in one batched decode; returns clean sentence-case captions."""
        if not images:
            return []
        pixels = self.pixels(images)
        width = self.beams if beams is None else _positive_int("beams", beams)
        if width == 1:
            ids = self.decode_greedy(pixels, max_tokens=max_tokens)
        else:
            ids = self.decode_beam(pixels, beams=width, max_tokens=max_tokens)
        return [self.to_text(row) for row in ids]

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess images into one float32 batch on the model's device."""
        batch = torch.stack([self.preprocess(img.convert("RGB")) for img in images])
        return batch.to(self.device, torch.float32)

    def to_text(self, ids: Sequence[int]) -> str:
        """Decode token ids (no start/end tokens) into a clean caption."""
        return clean_caption(self.tokenizer.decode(list(ids)))

    def decode_greedy(self, pixels: torch.Tensor, *,
                      max_tokens: int | None = None) -> list[list[int]]:
        """Greedy decoding of a batch; returns each image's token ids without start/end tokens."""
        steps = self._step_limit(max_tokens)
        n = pixels.shape[0]
        out: list[list[int]] = [[] for _ in range(n)]
        with self._inference():
            state = self._start(pixels, 1, steps)
            live = list(range(n))  # the images still decoding, in their rows' order
            tokens = torch.full((n,), self.sot_id, dtype=torch.long, device=self.device)
            for step in range(steps):
                nxt = self._logprobs(state, tokens, step).argmax(dim=-1)
                picked: list[int] = nxt.tolist()
                going = [a for a, tok in enumerate(picked) if tok != self.eot_id]
                for a in going:
                    out[live[a]].append(picked[a])
                if not going:
                    break
                if len(going) < len(live):
                    keep = torch.tensor(going, dtype=torch.long, device=self.device)
                    state.select(keep, keep)
                    nxt = nxt[keep]
                live = [live[a] for a in going]
                tokens = nxt
        return out

    def decode_beam(self, pixels: torch.Tensor, *, beams: int | None = None,
                    max_tokens: int | None = None) -> list[list[int]]:
        """Beam search over a batch (batch × beams rows); length-normalised, stops at end token."""
        k = self.beams if beams is None else _positive_int("beams", beams)
        steps = self._step_limit(max_tokens)
        n = pixels.shape[0]
        with self._inference():
            state = self._start(pixels, k, steps)
            search = BeamSearchState(n, k, start_id=self.sot_id, end_id=self.eot_id,
                                     length_penalty=self.length_penalty, device=self.device)
            images = list(range(n))  # the images still searching, in their rows' order
            for step in range(steps):
                rows = torch.tensor([i * k + b for i in images for b in range(k)],
                                    dtype=torch.long, device=self.device)
                logp = self._logprobs(state, search.seqs[rows, -1], step)
                parents = search.advance(images, rows, logp.double(), step)
                going = [a for a, i in enumerate(images) if not search.done[i]]
                if not going:
                    break
                state.select(torch.tensor([parents[a * k + b] for a in going for b in range(k)],
                                          dtype=torch.long, device=self.device),
                             torch.tensor(going, dtype=torch.long, device=self.device))
                images = [images[a] for a in going]
            return search.finish()

    # -- internals --------------------------------------------------------------------

    def _step_limit(self, max_tokens: int | None) -> int:
        steps = self.max_tokens if max_tokens is None else _positive_int("max_tokens", max_tokens)
        return min(steps, self.context_length)

    def _start(self, pixels: torch.Tensor, per_image: int, steps: int) -> DecodeState:
        """Encode the images once; a decode state for `per_image` rows of each."""
        latent, embs = self.model._encode_image(pixels.to(self.device, self.weights_dtype))
        return self.decoder.start(latent, embs, per_image, steps)

    def _logprobs(self, state: DecodeState, tokens: torch.Tensor, step: int) -> torch.Tensor:
        """Feed one token per row; fp32 log-probabilities of the next one, `step` made so far."""
        logp = torch.log_softmax(self.decoder.step(state, tokens).float(), dim=-1)
        logp[:, self.sot_id] = float("-inf")
        if step < self.min_tokens:
            logp[:, self.eot_id] = float("-inf")
        return logp

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.autocast:
                stack.enter_context(torch.autocast(self.device.type, dtype=self.dtype))
            yield


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _local_dir_source(folder: Path) -> str:
    if not (folder / "open_clip_config.json").is_file():
        raise ModelMissingError(f"Caption model folder {folder} has no open_clip_config.json: "
                                f"{_FIX}")
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir()):
        raise ModelMissingError(f"Caption model folder {folder} holds no weights file: {_FIX}")
    return f"local-dir:{folder}"


def _check_model_name(name: str, tag: str) -> None:
    if name.startswith(("hf-hub:", "local-dir:")):
        return
    if name not in open_clip.list_models():
        coca = ", ".join(m for m in open_clip.list_models() if m.startswith("coca"))
        raise ConfigError(f"[models] caption_model: {name!r} is not an open_clip model; "
                          f"CoCa models are {coca}")
    if tag and not open_clip.get_pretrained_cfg(name, tag) and not Path(tag).is_file():
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ConfigError(f"[models] caption_pretrained: {tag!r} is not a pretrained tag of "
                          f"{name}; known tags: {tags}")


def _load_open_clip(models: ModelsConfig, device: torch.device) -> tuple[CoCa, Any, Any]:
    """Build the open_clip model, eval transform and tokenizer, or fail with one line."""
    cache_dir = models.cache_dir or None
    tag: str | None = None
    if models.caption_path:
        folder = Path(models.caption_path).expanduser()
        if not folder.is_dir():
            raise ModelMissingError(f"Caption model folder {folder} does not exist: {_FIX}")
        name = label = _local_dir_source(folder)
    else:
        name, tag = models.caption_model, models.caption_pretrained or None
        _check_model_name(name, tag or "")
        label = f"{name} ({tag})" if tag else name
    try:
        # open_clip logs to the root logger: its INFO chatter and, before raising, the failed
        # download at ERROR, which would only repeat our one-line error below.
        with held_logs("huggingface_hub", root_paths=("open_clip",)):
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=tag, device=device, precision="fp32", cache_dir=cache_dir)
            tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    except Exception as exc:
        logger.debug("loading caption model %s failed", label, exc_info=True)
        problem = download_problem(exc)
        if problem:
            raise ModelMissingError(f"Caption model {label} {problem}: {_FIX}") from None
        raise ModelMissingError(f"Caption model {label} could not be loaded "
                                f"({type(exc).__name__}: {first_line(exc)}): {_FIX}") from None
    if not isinstance(model, CoCa):
        raise ConfigError(f"[models] caption_model: {label} is a {type(model).__name__}, "
                          "not a CoCa captioning model")
    return model.eval(), preprocess, tokenizer
