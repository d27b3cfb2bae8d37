"""The reference the cached decoder is checked against: open_clip's full CoCa forward each step.

This is how the captioner decoded before it had a cache: every step runs `CoCa.forward` over
the whole sequence so far and reads the last position's logits.
"""

from __future__ import annotations

import torch
from open_clip.coca_model import CoCa

from core.models.caption_decoder import CachedCoCaDecoder, DecodeState, StepDecoder


class FullState(DecodeState):
    def __init__(self, latent: torch.Tensor, embs: torch.Tensor, per_image: int) -> None:
        self.latent, self.embs, self.per_image = latent, embs, per_image
        self.tokens = torch.zeros(latent.shape[0] * per_image, 0, dtype=torch.long,
                                  device=latent.device)

    def select(self, rows: torch.Tensor, images: torch.Tensor) -> None:
        self.tokens = self.tokens[rows]
        self.latent, self.embs = self.latent[images], self.embs[images]


class FullRecomputeDecoder(StepDecoder):
    """Every step: the whole prefix through `CoCa.forward`, the last position's logits."""

    def __init__(self, model: CoCa) -> None:
        self.model = model

    def start(self, image_latent: torch.Tensor, image_embs: torch.Tensor, per_image: int,
              max_len: int) -> FullState:
        return FullState(image_latent, image_embs, per_image)

    def step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        assert isinstance(state, FullState)
        state.tokens = torch.cat([state.tokens, tokens[:, None]], dim=1)
        src = torch.arange(state.tokens.shape[0], device=tokens.device) // state.per_image
        out = self.model(None, state.tokens, image_latent=state.latent[src],
                         image_embs=state.embs[src], output_labels=False)
        return out["logits"][:, -1]


class TwinState(DecodeState):
    def __init__(self, cached: DecodeState, full: DecodeState) -> None:
        self.cached, self.full = cached, full

    def select(self, rows: torch.Tensor, images: torch.Tensor) -> None:
        self.cached.select(rows, images)
        self.full.select(rows, images)


class TwinDecoder(StepDecoder):
    """Steps the cached decoder and the reference side by side; records how far apart they are.

    The search follows the reference's logits, so the token ids it gives are the reference's.
    """

    def __init__(self, model: CoCa) -> None:
        self.cached = CachedCoCaDecoder(model)
        self.full = FullRecomputeDecoder(model)
        self.differences: list[float] = []  # largest |log-prob difference| of each step

    def start(self, image_latent: torch.Tensor, image_embs: torch.Tensor, per_image: int,
              max_len: int) -> TwinState:
        return TwinState(self.cached.start(image_latent, image_embs, per_image, max_len),
                         self.full.start(image_latent, image_embs, per_image, max_len))

    def step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        assert isinstance(state, TwinState)
        cached = self.cached.step(state.cached, tokens).float().log_softmax(-1)
        full = self.full.step(state.full, tokens)
        self.differences.append(float((cached - full.float().log_softmax(-1)).abs().max()))
        return full
