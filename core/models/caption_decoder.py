"""Incremental CoCa text decoding: each step feeds one token per row and reads one row of logits.

open_clip's CoCa forward recomputes the whole prefix at every step: the text tower and the
multimodal decoder over every earlier token, the cross-attention keys and values of all 256
image tokens for every row, and the 49,408-word output layer at every position. Here:

- the image's cross-attention keys/values are computed once per image, in `start`, and all
  of that image's rows (its beams) attend to the same tensors: beams are queries side by side;
- the self-attention keys/values of the text tower and of the decoder are cached per row,
  reordered when beams are re-ranked and cut down when images finish (`DecodeState.select`);
- the output layer runs on the last position only.

It reproduces what `CoCa.forward` computes for the last position, including the text tower's
padding mask: open_clip masks, as a key, the position after every `pad_id` token (the
legacy CLS mask of existing CoCa weights; the token right at the pad with `correct_cls_mask`).
The CLS embedding CoCa appends after the text comes last under a causal mask, so no earlier
position ever sees it, and generation can leave it out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.coca_model import CoCa
from open_clip.transformer import MultimodalTransformer, ResidualAttentionBlock, TextTransformer
from torch import nn

from core.errors import ConfigError


class DecodeState:
    """What a decode carries from step to step; rows are grouped by image, `per_image` each."""

    def select(self, rows: torch.Tensor, images: torch.Tensor) -> None:
        """Keep `images` (positions among the live ones) and make row r a copy of `rows[r]`."""
        raise NotImplementedError


class StepDecoder:
    """Next-token logits of every live row, one token fed per row per step."""

    def start(self, image_latent: torch.Tensor, image_embs: torch.Tensor, per_image: int,
              max_len: int) -> DecodeState:
        """A state for `per_image` rows of each image, at most `max_len` tokens per row."""
        raise NotImplementedError

    def step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed `tokens` (one per row) and return the (rows, vocab) next-token logits."""
        raise NotImplementedError


class CachedState(DecodeState):
    """Cached keys/values: (layers, 2, rows or images, heads, positions, head width)."""

    def __init__(self, text_kv: torch.Tensor, decoder_kv: torch.Tensor, cross_kv: torch.Tensor,
                 per_image: int, max_len: int) -> None:
        self.text_kv, self.decoder_kv, self.cross_kv = text_kv, decoder_kv, cross_kv
        self.per_image, self.max_len = per_image, max_len
        rows = text_kv.shape[2]
        # A text-tower key is masked after a pad token; True = the key is attended to.
        self.key_valid = torch.ones(rows, max_len, dtype=torch.bool, device=text_kv.device)
        self.last_tokens = torch.zeros(rows, dtype=torch.long, device=text_kv.device)
        self.any_masked = False  # no padding seen yet: attention needs no mask at all
        self.length = 0

    def select(self, rows: torch.Tensor, images: torch.Tensor) -> None:
        n = self.length  # positions past the length hold nothing yet: leave them behind
        self.text_kv = _take_rows(self.text_kv, rows, n)
        self.decoder_kv = _take_rows(self.decoder_kv, rows, n)
        self.key_valid = self.key_valid.index_select(0, rows)
        self.last_tokens = self.last_tokens.index_select(0, rows)
        if images.numel() != self.cross_kv.shape[2]:  # an image finished: copy only then
            self.cross_kv = self.cross_kv.index_select(2, images)


def _take_rows(cache: torch.Tensor, rows: torch.Tensor, length: int) -> torch.Tensor:
    out = cache.new_empty((*cache.shape[:2], rows.numel(), *cache.shape[3:]))
    torch.index_select(cache[..., :length, :], 2, rows, out=out[..., :length, :])
    return out


def check_supported(model: nn.Module) -> None:
    """ConfigError unless `model` is a CoCa whose towers this decoder reproduces exactly."""
    text = getattr(model, "text", None)
    decoder = getattr(model, "text_decoder", None)
    problem = ""
    if not isinstance(text, TextTransformer):
        problem = f"its text tower is a {type(text).__name__}, not open_clip's TextTransformer"
    elif text.attn_mask is None:
        problem = "its text tower is not causal"
    elif not isinstance(decoder, MultimodalTransformer):
        problem = f"its decoder is a {type(decoder).__name__}"
    else:
        blocks = [*text.transformer.resblocks, *decoder.resblocks, *decoder.cross_attn]
        odd = [b for b in blocks if type(b) is not ResidualAttentionBlock
               or not b.attn.batch_first or not b.attn._qkv_same_embed_dim]
        if odd or not text.transformer.batch_first or not decoder.batch_first:
            problem = "its attention blocks are not open_clip's standard ones"
    if problem:
        raise ConfigError(f"[models] caption_model: {type(model).__name__} cannot be decoded "
                          f"by Sonify's cached decoder: {problem}; use a CoCa model such as "
                          "coca_ViT-L-14")


class CachedCoCaDecoder(StepDecoder):
    """Incremental decoding over the modules of an open_clip CoCa (weights shared, not copied)."""

    def __init__(self, model: CoCa) -> None:
        check_supported(model)
        self.text: TextTransformer = model.text
        self.decoder: MultimodalTransformer = model.text_decoder
        self.text_blocks: list[ResidualAttentionBlock] = list(self.text.transformer.resblocks)
        self.self_blocks: list[ResidualAttentionBlock] = list(self.decoder.resblocks)
        self.cross_blocks: list[ResidualAttentionBlock] = list(self.decoder.cross_attn)
        # open_clip builds the pad mask whenever a CLS embedding is appended (or use_pad_mask).
        self.pad_masked = self.text.cls_emb is not None or bool(self.text.use_pad_mask)
        self.pad_id = int(self.text.pad_id)
        self.mask_at_pad = bool(getattr(self.text, "correct_cls_mask", False))
        self.max_positions = min(self.text.attn_mask.shape[0], self.decoder.attn_mask.shape[0])

    def start(self, image_latent: torch.Tensor, image_embs: torch.Tensor, per_image: int,
              max_len: int) -> CachedState:
        if max_len > self.max_positions:
            raise ValueError(f"max_len {max_len} exceeds the model's {self.max_positions} "
                             "positions")
        images = image_embs.shape[0]
        cross = []
        for block in self.cross_blocks:
            kv = block.ln_1_kv(image_embs)
            w, b = _split_in_proj(block.attn)
            cross.append(torch.stack([_heads(F.linear(kv, w[i], b[i]), block.attn.num_heads)
                                      for i in (1, 2)]))
        cross_kv = torch.stack(cross)
        dtype = cross_kv.dtype  # what the projections give: the weights' dtype or autocast's
        rows = images * per_image
        return CachedState(self._empty(self.text_blocks, rows, max_len, dtype, image_embs.device),
                           self._empty(self.self_blocks, rows, max_len, dtype, image_embs.device),
                           cross_kv, per_image, max_len)

    @staticmethod
    def _empty(blocks: list[ResidualAttentionBlock], rows: int, max_len: int,
               dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        attn = blocks[0].attn
        heads = attn.num_heads
        return torch.empty(len(blocks), 2, rows, heads, max_len, attn.embed_dim // heads,
                           dtype=dtype, device=device)

    def step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(state, CachedState):
            raise TypeError("a CachedCoCaDecoder steps only its own CachedState")
        t = state.length
        if t >= state.max_len:
            raise ValueError(f"the state holds {state.max_len} tokens per row; it is full")
        text_mask = self._text_key_mask(state, tokens, t)
        cast = self.text_blocks[0].mlp.c_fc.weight.dtype
        x = self.text.token_embedding(tokens).to(cast) + self.text.positional_embedding[t].to(cast)
        for i, block in enumerate(self.text_blocks):
            x = _self_attention_block(block, x, state.text_kv[i], t, text_mask)
        for i, (own, cross) in enumerate(zip(self.self_blocks, self.cross_blocks, strict=True)):
            x = _self_attention_block(own, x, state.decoder_kv[i], t, None)
            x = _cross_attention_block(cross, x, state.cross_kv[i], state.per_image)
        state.length = t + 1
        state.last_tokens = tokens
        logits: torch.Tensor = self.decoder.ln_final(x) @ self.decoder.text_projection
        return logits

    def _text_key_mask(self, state: CachedState, tokens: torch.Tensor,
                       t: int) -> torch.Tensor | None:
        """(rows, 1, 1, t + 1) bool mask of the text tower's keys, or None when none is masked."""
        if not self.pad_masked:
            return None
        if self.mask_at_pad:
            valid = tokens != self.pad_id
        elif t == 0:
            valid = torch.ones_like(tokens, dtype=torch.bool)
        else:
            valid = state.last_tokens != self.pad_id
        state.key_valid[:, t] = valid
        if not state.any_masked:
            state.any_masked = not bool(valid.all())
            if not state.any_masked:
                return None
        return state.key_valid[:, None, None, :t + 1]


def _split_in_proj(attn: nn.MultiheadAttention) -> tuple[list[torch.Tensor],
                                                         list[torch.Tensor | None]]:
    """The query, key and value projections packed in `in_proj_weight`, as views."""
    bias: torch.Tensor | None = attn.in_proj_bias  # None when built with bias=False
    biases: list[torch.Tensor | None] = list(bias.chunk(3)) if bias is not None else [None] * 3
    return list(attn.in_proj_weight.chunk(3)), biases


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, positions, width) -> (batch, heads, positions, head width)."""
    b, n, width = x.shape
    return x.view(b, n, heads, width // heads).transpose(1, 2)


def _self_attention_block(block: ResidualAttentionBlock, x: torch.Tensor, cache: torch.Tensor,
                          t: int, mask: torch.Tensor | None) -> torch.Tensor:
    """One causal self-attention block at position t for (rows, width) inputs."""
    attn = block.attn
    rows, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(rows, 3, heads, width // heads).unbind(1)
    cache[0, :, :, t] = k
    cache[1, :, :, t] = v
    out = F.scaled_dot_product_attention(q[:, :, None], cache[0, :, :, :t + 1],
                                         cache[1, :, :, :t + 1], attn_mask=mask)
    out = F.linear(out.reshape(rows, width), attn.out_proj.weight, attn.out_proj.bias)
    return _residual_mlp(block, x + block.ls_1(out))


def _cross_attention_block(block: ResidualAttentionBlock, x: torch.Tensor, kv: torch.Tensor,
                           per_image: int) -> torch.Tensor:
    """Cross-attention to each image's cached keys/values; its rows are queries side by side."""
    attn = block.attn
    rows, width = x.shape
    heads = attn.num_heads
    w, b = _split_in_proj(attn)
    q = F.linear(block.ln_1(x), w[0], b[0])
    q = q.view(rows // per_image, per_image, heads, width // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, kv[0], kv[1])
    out = F.linear(out.transpose(1, 2).reshape(rows, width), attn.out_proj.weight,
                   attn.out_proj.bias)
    return _residual_mlp(block, x + block.ls_1(out))


def _residual_mlp(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = x + block.ls_2(block.mlp(block.ln_2(x)))
    return out
