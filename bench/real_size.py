"""The default models' architectures at full size with random weights: honest timings, no files.

CoCa from open_clip's shipped coca_ViT-L-14.json, AudioLDM s-full-v2 and Stable Audio 3
small-sfx from the component configs below (each number cited). Random weights at real size
cost the same arithmetic as trained ones; the output is noise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import open_clip
import torch
from diffusers import (
    AudioLDMPipeline,
    AutoencoderKL,
    AutoencoderSAME,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    StableAudio3DiTModel,
    StableAudio3DurationEmbedder,
    StableAudio3Pipeline,
    UNet2DConditionModel,
)
from transformers import (
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    ClapTextModelWithProjection,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5GemmaConfig,
    T5GemmaEncoderModel,
)

from core.models.captioner import Captioner
from core.models.clap import ClapScorer
from core.models.quiet import held_logs
from core.models.tiny.audioldm import offline_roberta_tokenizer
from core.models.tiny.stable_audio3 import tiny_gemma_tokenizer

SEED = 0


# -- real-size AudioLDM (s-full-v2) with random weights --------------------------------------
# Numbers come from diffusers' scripts/convert_original_audioldm_to_diffusers.py: its
# DEFAULT_CONFIG (the original AudioLDM config, as in haoheliu/AudioLDM audioldm/utils.py
# default_audioldm_config) and the create_*_config functions that turn it into diffusers configs.

def real_size_audioldm_components() -> dict[str, Any]:
    """AudioLDM s-full(-v2) components at full size, random weights (seeded), eval mode."""
    torch.manual_seed(SEED)
    # unet_config.params: model_channels 128 × channel_mult [1, 2, 3, 5] → block_out_channels;
    # attention_resolutions [8, 4, 2] → cross-attention blocks at resolutions 2, 4, 8 (all but
    # the first level); num_res_blocks 2 → layers_per_block; in/out_channels 8; no
    # cross_attention_dim key → cross_attention_dim = block_out_channels (create_unet_diffusers_
    # config); extra_film_condition_dim 512 + extra_film_use_concat → class_embed_type
    # "simple_projection", projection_class_embeddings_input_dim 512, class_embeddings_concat.
    # image_size 512 // vae_scale_factor 4 → sample_size 128. The script leaves
    # attention_head_dim at diffusers' default (8 heads); the original num_head_channels is 32 —
    # the same attention FLOPs either way.
    channels = tuple(128 * m for m in (1, 2, 3, 5))
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=8, out_channels=8, block_out_channels=channels,
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                          "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                        "UpBlock2D"),
        cross_attention_dim=channels, class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=512, class_embeddings_concat=True)
    torch.manual_seed(SEED)
    # first_stage_config.ddconfig: ch 128 × ch_mult [1, 2, 4], z_channels 8, num_res_blocks 2,
    # in_channels/out_ch 1, resolution 256 (the script passes image_size 512 as sample_size).
    # scaling_factor is learnt (checkpoint "scale_factor"); 0.18215 is the script's fallback.
    vae = AutoencoderKL(
        sample_size=512, in_channels=1, out_channels=1, block_out_channels=(128, 256, 512),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=8, layers_per_block=2, scaling_factor=0.18215)
    torch.manual_seed(SEED)
    # The script loads ClapTextConfig from laion/clap-htsat-unfused: RoBERTa-base (12 layers,
    # width 768, 12 heads, FFN 3072, vocab 50265, 514 positions) + a 512-d projection; these are
    # ClapTextConfig's defaults, spelled out here.
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
        projection_dim=512, projection_hidden_act="relu"))
    torch.manual_seed(SEED)
    # vocoder_config.params → create_transformers_vocoder_config: num_mels 64, 16 kHz, upsample
    # rates [5, 4, 2, 2, 2] (hop 160), kernels [16, 16, 8, 4, 4], initial channels 1024,
    # resblock kernels [3, 7, 11] with dilations [1, 3, 5], normalize_before False.
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024,
        upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[16, 16, 8, 4, 4],
        resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5]] * 3,
        normalize_before=False))
    # load_pipeline_from_original_audioldm_ckpt's DDIM: timesteps 1000, linear_start 0.0015,
    # linear_end 0.0195, scaled_linear, steps_offset 1, no clipping, epsilon prediction.
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
        beta_schedule="scaled_linear", steps_offset=1, clip_sample=False,
        set_alpha_to_one=False, prediction_type="epsilon")
    # Byte-level stand-in for RoBERTa's BPE (no download); 77 tokens as the original AudioLDM
    # CLAP tokenizer pads to (haoheliu/AudioLDM audioldm/clap/encoders.py).
    tokenizer = offline_roberta_tokenizer(77)
    for module in (unet, vae, text_encoder, vocoder):
        module.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": scheduler, "vocoder": vocoder}


# -- real-size Stable Audio 3 small-sfx with random weights ---------------------------------
# stabilityai/stable-audio-3-small-sfx is published in Stability's own layout (model_config.json
# + model.safetensors, gated), so its numbers were gathered from public sources instead:
# - DiT: the layer map Stability ships for small-sfx LoRA engines (stable-audio-3 repository,
#   optimized/tensorRT/scripts/lora/branch_map_sm_sfx_lora.json): 20 blocks (layers.0-19),
#   width 1024, fused self-attention qkv 1024 -> 3072 (plain, not differential, attention),
#   SwiGLU 1024 -> 8192 / 4096 -> 1024 (ff_mult 4), text tokens 768 -> 1024, duration 768 ->
#   1024, timestep features 256, latents 256 in and out, local (inpainting) input 257, AdaLN
#   1024 -> 6144. About 433 M parameters, as Stability's model table says. Not in that map,
#   so diffusers' defaults (those of its converter): head width 64 (16 heads), 64 memory tokens.
# - SAME-S autoencoder: AutoencoderSAME's defaults, which diffusers documents as SAME-S
#   (patch 256 x stride 16 = 4096 samples per latent, 256-d latents, stereo 44.1 kHz).
# - Text encoder: the T5Gemma b-b (UL2) encoder, as Stability's CPU build dumps it
#   (optimized/cpu-amx/build/t5gemma/dump_weights.py): 12 layers, width 768, q/k/v 768 -> 768
#   (12 heads of 64), MLP 2048, vocabulary 256000. The pipeline always pads to 256 tokens.
# - Duration embedder: 256 Fourier features -> 768 (the same LoRA map); sampler: the
#   stochastic flow-matching Euler sampler of the distilled checkpoints, 8 steps.

def real_size_stable_audio3_components() -> dict[str, Any]:
    """Stable Audio 3 small-sfx components at full size, random weights (seeded), eval mode."""
    encoder = {"vocab_size": 256_000, "hidden_size": 768, "intermediate_size": 2048,
               "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 12,
               "head_dim": 64}
    torch.manual_seed(SEED)
    text_encoder = T5GemmaEncoderModel(T5GemmaConfig(encoder=encoder, decoder=encoder,
                                                     vocab_size=256_000,
                                                     is_encoder_decoder=False))
    torch.manual_seed(SEED)
    vae = AutoencoderSAME()
    torch.manual_seed(SEED)
    transformer = StableAudio3DiTModel(
        io_channels=256, embed_dim=1024, depth=20, num_heads=16, cond_token_dim=768,
        global_cond_dim=768, local_add_cond_dim=257, timestep_features_dim=256, ff_mult=4.0,
        num_memory_tokens=64, use_differential_attention=False)
    torch.manual_seed(SEED)
    duration_embedder = StableAudio3DurationEmbedder(output_dim=768, fourier_dim=256)
    for module in (text_encoder, vae, transformer, duration_embedder):
        module.eval()
    # A character-level stand-in for the Gemma tokenizer (no download); the pipeline pads every
    # prompt to 256 tokens whatever the tokenizer, so the encoder's work is the real one.
    return {"text_encoder": text_encoder, "vae": vae, "transformer": transformer,
            "duration_embedder": duration_embedder,
            "tokenizer": tiny_gemma_tokenizer(model_max_length=256),
            "scheduler": FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)}


def real_size_clap(device: torch.device, dtype: torch.dtype) -> ClapScorer:
    """laion/clap-htsat-unfused's architecture (transformers' ClapConfig defaults), random."""
    torch.manual_seed(SEED)
    return ClapScorer(ClapModel(ClapConfig()).eval(), offline_roberta_tokenizer(77),
                      ClapFeatureExtractor(truncation="rand_trunc"), device=device, dtype=dtype)


REAL_SIZE = {"audioldm": (AudioLDMPipeline, real_size_audioldm_components),
             "stable-audio-3": (StableAudio3Pipeline, real_size_stable_audio3_components)}


def real_size_captioner(device: torch.device, dtype: torch.dtype, beams: int,
                        max_tokens: int) -> Captioner:
    """Full-size CoCa ViT-L/14 with random weights, no files."""
    torch.manual_seed(SEED)
    with held_logs(root_paths=("open_clip",), drop=("No pretrained weights",)):  # we know
        model, _, preprocess = open_clip.create_model_and_transforms(
            "coca_ViT-L-14", pretrained=None, precision="fp32")
    # open_clip leaves the decoder's output projection uninitialised (torch.empty).
    width = model.text_decoder.text_projection.shape[0]
    torch.nn.init.normal_(model.text_decoder.text_projection, std=width**-0.5)
    tokenizer = open_clip.get_tokenizer("coca_ViT-L-14")
    return Captioner(model.eval(), preprocess, tokenizer, device=device, dtype=dtype,
                     beams=beams, max_tokens=max_tokens)
