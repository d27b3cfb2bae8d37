"""The cached caption decoder gives what open_clip's full forward gives, step by step (fp32).

Same token ids as the full recompute for greedy and beam search, and every step's
log-probabilities within 1e-4, on the tiny CoCa and on the full-size coca_ViT-L-14
architecture (random weights).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.coca_model import CoCa
from PIL import Image

from core.errors import ConfigError
from core.models.caption_decoder import CachedCoCaDecoder, StepDecoder
from core.models.captioner import Captioner
from core.models.tiny.coca import build_tiny_coca
from tests.conftest import TINY_CACHE
from tests.core.models.reference_decoder import FullRecomputeDecoder, TwinDecoder

LOGP_TOLERANCE = 1e-4
EOT = 49407
REAL_SIZE = Path(__file__).resolve().parents[3] / "bench" / "real_size.py"


def pictures(n: int, seed: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (48 + 9 * i, 64, 3), dtype=np.uint8))
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny() -> tuple[CoCa, object, object]:
    """The tiny CoCa, its end token made likelier so that images finish at different steps."""
    folder = build_tiny_coca(TINY_CACHE / "tiny")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    with torch.no_grad():
        model.text_decoder.text_projection[:, EOT] *= 3.0
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


def decode(captioner: Captioner, pixels: torch.Tensor, beams: int,
           max_tokens: int) -> list[list[int]]:
    if beams == 1:
        return captioner.decode_greedy(pixels, max_tokens=max_tokens)
    return captioner.decode_beam(pixels, beams=beams, max_tokens=max_tokens)


def compare(model: torch.nn.Module, preprocess: object, tokenizer: object,
            batches: list[list[Image.Image]], beams: int, max_tokens: int,
            min_tokens: int) -> list[list[int]]:
    """Decode each batch cached and side by side with the reference; assert they agree."""
    def captioner(decoder: StepDecoder | None) -> Captioner:
        return Captioner(model, preprocess, tokenizer, beams=beams, max_tokens=max_tokens,
                         min_tokens=min_tokens, decoder=decoder)  # type: ignore[arg-type]

    coca = model.coca if isinstance(model, EncodedOnce) else model
    # A CoCa gets the cached decoder by default; the wrapper below is given one.
    cached = captioner(CachedCoCaDecoder(coca) if coca is not model else None)
    assert isinstance(cached.decoder, CachedCoCaDecoder)
    out = []
    for images in batches:
        pixels = cached.pixels(images)
        twin = TwinDecoder(coca)
        reference = decode(captioner(twin), pixels, beams, max_tokens)
        assert decode(cached, pixels, beams, max_tokens) == reference
        assert twin.differences and max(twin.differences) < LOGP_TOLERANCE, twin.differences
        out += reference
    return out


@pytest.mark.parametrize("beams", [1, 2, 3, 6])
def test_tiny_cached_decoder_equals_full_recompute(tiny: tuple[CoCa, object, object],
                                                   beams: int) -> None:
    model, preprocess, tokenizer = tiny
    images = pictures(7)
    batches = [images[:1], images[1:4], images[:7]]
    ids = compare(model, preprocess, tokenizer, batches, beams, max_tokens=12, min_tokens=1)
    lengths = {len(row) for row in ids}
    # Images finish at different steps (some before the limit), so rows leave the cache.
    assert len(lengths) > 1 and min(lengths) < 12, lengths


@pytest.mark.parametrize("correct_cls_mask", [False, True])
def test_pad_tokens_mask_the_text_tower_as_open_clip_does(tiny: tuple[CoCa, object, object],
                                                          correct_cls_mask: bool) -> None:
    """Token 0 is open_clip's pad_id: the full forward masks a key next to it; so must we."""
    model = copy.deepcopy(tiny[0])
    model.text.correct_cls_mask = correct_cls_mask
    tokens = torch.tensor([[49406, 320, 0, 1929, 0, 0, 539],
                           [49406, 0, 3309, 268, 0, 1125, 0],
                           [49406, 518, 2368, 269, 1929, 320, 2368]])
    pixels = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    cached, full = CachedCoCaDecoder(model), FullRecomputeDecoder(model)
    with torch.inference_mode():
        latent, embs = model._encode_image(pixels)
        states = cached.start(latent, embs, 1, 7), full.start(latent, embs, 1, 7)
        for t in range(tokens.shape[1]):
            got = cached.step(states[0], tokens[:, t]).log_softmax(-1)
            want = full.step(states[1], tokens[:, t]).log_softmax(-1)
            assert float((got - want).abs().max()) < LOGP_TOLERANCE, t
    # The mask matters: without it, the rows with pads would differ from the reference.
    unmasked = CachedCoCaDecoder(model)
    unmasked.pad_masked = False
    with torch.inference_mode():
        state = unmasked.start(latent, embs, 1, 7)
        for t in range(tokens.shape[1]):
            got = unmasked.step(state, tokens[:, t]).log_softmax(-1)
    assert float((got - want).abs()[:2].max()) > 1e-3


def test_unsupported_models_are_refused_in_one_line() -> None:
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    with pytest.raises(ConfigError, match=r"\[models\] caption_model: .*cached decoder"):
        CachedCoCaDecoder(clip)  # type: ignore[arg-type]


# -- the full-size architecture ---------------------------------------------------------------

class EncodedOnce(torch.nn.Module):
    """The full-size CoCa, each picture encoded once (the image tower is not on test here)."""

    def __init__(self, coca: CoCa) -> None:
        super().__init__()
        self.coca = coca
        self.context_length = coca.context_length
        self._encoded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _encode_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for row in pixels.split(1):
            key = hashlib.sha1(row.float().cpu().numpy().tobytes()).hexdigest()
            if key not in self._encoded:
                self._encoded[key] = self.coca._encode_image(row)
            rows.append(self._encoded[key])
        return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])


def test_full_size_cached_decoder_equals_full_recompute() -> None:
    spec = importlib.util.spec_from_file_location("real_size", REAL_SIZE)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    real = bench.real_size_captioner(torch.device("cpu"), torch.float32, 2, 4)
    model = EncodedOnce(real.model)
    images = pictures(2, seed=11)
    for beams in (1, 2):
        compare(model, real.preprocess, real.tokenizer, [images[:1], images], beams,
                max_tokens=4, min_tokens=0)
