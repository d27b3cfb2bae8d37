"""Stable Audio 3: the text context's cross-attention keys/values projected once per call.

The DiT projects the same text context (256 tokens + the duration) to keys and values in each
of its blocks at every sampling step: about a fifth of the small-sfx DiT's work, all of it
repeated. `ContextKVProcessor` keeps each block's projection while the context is the same
tensor value (compared exactly, so a new prompt is never answered with an old one's keys) and
otherwise computes what diffusers' `StableAudio3CrossAttnProcessor` computes, in the same order.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_stable_audio3 import (
    StableAudio3CrossAttention,
    StableAudio3CrossAttnProcessor,
)


class ContextKVProcessor(StableAudio3CrossAttnProcessor):
    """StableAudio3CrossAttnProcessor that reuses the context projection while it is unchanged."""

    def __init__(self) -> None:
        self._context: torch.Tensor | None = None
        self._kv: torch.Tensor | None = None

    def forget(self) -> None:
        """Drop the kept projection (between calls: it holds a batch's worth of keys/values)."""
        self._context = self._kv = None

    def _projected(self, attn: StableAudio3CrossAttention, context: torch.Tensor) -> torch.Tensor:
        kept = self._context
        if kept is None or self._kv is None or kept.shape != context.shape \
                or kept.dtype != context.dtype or kept.device != context.device \
                or not torch.equal(kept, context):
            projected: torch.Tensor = attn.to_kv(context)
            self._context, self._kv = context, projected
        return self._kv

    def __call__(self, attn: StableAudio3CrossAttention, hidden_states: torch.Tensor,
                 context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        def heads(x: torch.Tensor) -> torch.Tensor:
            split: torch.Tensor = x.reshape(*x.shape[:-1], attn.heads, attn.dim_heads)
            return split

        attn_mask = None if context_mask is None else context_mask[:, None, None, :].bool()
        kv = self._projected(attn, context)
        options: dict[str, Any] = {"attn_mask": attn_mask, "backend": self._attention_backend,
                                   "parallel_config": self._parallel_config}
        if attn.use_differential:
            q1, q2 = attn.to_q(hidden_states).chunk(2, dim=-1)
            k1, k2, v = kv.chunk(3, dim=-1)
            q1, q2, k1, k2, v = map(heads, (q1, q2, k1, k2, v))
            q1, q2 = attn.q_norm(q1), attn.q_norm(q2)
            k1, k2 = attn.k_norm(k1), attn.k_norm(k2)
            out = dispatch_attention_fn(q1, k1, v, **options) \
                - dispatch_attention_fn(q2, k2, v, **options)
        else:
            q = heads(attn.to_q(hidden_states))
            k, v = map(heads, kv.chunk(2, dim=-1))
            q, k = attn.q_norm(q), attn.k_norm(k)
            out = dispatch_attention_fn(q, k, v, **options)
        result: torch.Tensor = attn.to_out(out.flatten(2, 3))
        return result


def install(transformer: torch.nn.Module) -> list[ContextKVProcessor]:
    """Give every cross-attention of `transformer` its own ContextKVProcessor; returns them."""
    processors = []
    for module in transformer.modules():
        if isinstance(module, StableAudio3CrossAttention):
            processor = ContextKVProcessor()
            module.set_processor(processor)  # type: ignore[arg-type]  # diffusers lists its own
            processors.append(processor)
    return processors
