"""A tiny random-weight Stable Audio 3 pipeline of the real classes, built offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderSAME,
    FlowMatchEulerDiscreteScheduler,
    StableAudio3DiTModel,
    StableAudio3DurationEmbedder,
    StableAudio3Pipeline,
)
from transformers import GemmaTokenizer, T5GemmaConfig, T5GemmaEncoderModel

from core.models.tiny.audioldm import SEED, quietly, save_once

# Folder names carry a version so a changed recipe never reuses a stale build.
STABLE_AUDIO3_DIR = "stable-audio-3-v3"
# The real pipeline reads min(model_max_length, 256) tokens; a shorter window here lets tests see
# prompts being shortened, which 256 real Gemma tokens (a paragraph) would almost never need.
TINY_TEXT_WINDOW = 96
_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "▁")
_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789,.'-"
_WIDTH = 32  # encoder hidden size = DiT cross-attention token size = duration embedding size


def tiny_gemma_tokenizer(model_max_length: int = TINY_TEXT_WINDOW) -> GemmaTokenizer:
    """A character-level Gemma tokenizer from an in-code vocabulary (no sentencepiece file).

    transformers 5 ignores `vocab_file=`: the vocabulary is passed as a dict, without merges,
    so every character is one token (with and without the word-start mark "▁").
    """
    tokens = [*_SPECIALS, *_CHARACTERS, *("▁" + c for c in _CHARACTERS)]
    return GemmaTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[],
                          model_max_length=model_max_length)


def tiny_stable_audio3_components() -> dict[str, Any]:
    """Components of a tiny `StableAudio3Pipeline` (T5Gemma, DiT, SAME, duration embedder)."""
    tokenizer = tiny_gemma_tokenizer()
    vocab = len(tokenizer)
    module = {"vocab_size": vocab, "hidden_size": _WIDTH, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
              "head_dim": 16}
    torch.manual_seed(SEED)
    # Without is_encoder_decoder=False the encoder-only class refuses the config.
    text_encoder = T5GemmaEncoderModel(T5GemmaConfig(encoder=module, decoder=module,
                                                     vocab_size=vocab, is_encoder_decoder=False))
    torch.manual_seed(SEED)
    # One resampling level of stride 16 on 256-sample patches: the real 4096-sample hop.
    # Any: mypy resolves diffusers' name to its no-torch placeholder class, not the module.
    vae: Any = AutoencoderSAME(audio_channels=2, patch_size=256, encoder_channels=16,
                               encoder_c_mults=[2], encoder_strides=[16],
                               encoder_transformer_depths=[1], latent_dim=16, dim_heads=8,
                               ff_mult=2)
    # SAME starts its attention and feed-forward branches at zero and its output tokens near
    # zero (training grows them): a random decoder would ignore the latents and turn every
    # prompt and seed into the same clip, and no test could tell two renders apart.
    with torch.no_grad():
        for name, weight in vae.named_parameters():
            if name.endswith(("to_out.weight", "proj_out.weight")) and not weight.any():
                weight.normal_(0.0, 0.2)
            elif name.endswith("new_tokens"):
                weight.normal_(0.0, 0.5)
    torch.manual_seed(SEED)
    transformer = StableAudio3DiTModel(io_channels=16, embed_dim=32, depth=2, num_heads=2,
                                       cond_token_dim=_WIDTH, global_cond_dim=_WIDTH,
                                       timestep_features_dim=16, ff_mult=2.0, num_memory_tokens=4)
    torch.manual_seed(SEED)
    duration_embedder = StableAudio3DurationEmbedder(output_dim=_WIDTH, fourier_dim=16)
    # The distilled checkpoints ship the stochastic ("ping-pong") sampler: fresh noise each step,
    # drawn from the per-prompt generators, so seeds decide every step.
    scheduler = FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)
    components: dict[str, Any] = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
                                  "duration_embedder": duration_embedder,
                                  "transformer": transformer, "scheduler": scheduler}
    for part in components.values():
        if isinstance(part, torch.nn.Module):
            part.eval()  # built from configs in train mode: dropout would make calls differ
    return components


def build_tiny_stable_audio3(root: Path) -> Path:
    """Build (once) a tiny random `StableAudio3Pipeline` under `root` and return its folder."""
    return save_once(Path(root) / STABLE_AUDIO3_DIR,
                     quietly(lambda: StableAudio3Pipeline(**tiny_stable_audio3_components())))
