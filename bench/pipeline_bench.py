"""Pipeline benchmark: N images one by one vs. as one batch, per stage (caption, sound, encode).

Usage: .venv/bin/python bench/pipeline_bench.py --preset tiny|real-random [--n N]
       [--device auto|cpu|cuda] [--seconds S] [--steps K] [--beams B] [--max-tokens T]

`tiny` loads the tiny random test models through the real loading code (ModelLoader).
`real-random` builds the real ARCHITECTURES at full size with random weights (no download):
CoCa from open_clip's shipped coca_ViT-L-14.json and AudioLDM s-full-v2 from the component
configs below, so its timings are honest for the real models' size (not their output).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import open_clip
import torch
from diffusers import AudioLDMPipeline, AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from PIL import Image, ImageDraw
from transformers import (
    ClapTextConfig,
    ClapTextModelWithProjection,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
)

from core.audio.encode import encode_clip
from core.config import GenerationConfig, parse_config
from core.models.captioner import Captioner
from core.models.loading import ModelLoader, resolve_device
from core.models.pipeline import Pipeline, PipelineInput, PipelineResult
from core.models.sound import SoundGenerator
from core.models.tiny.audioldm import offline_roberta_tokenizer
from core.options import GenerationOptions

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


def real_random_pipeline(device: torch.device, dtype: torch.dtype, beams: int,
                         max_tokens: int) -> Pipeline:
    """Full-size CoCa ViT-L/14 + AudioLDM s-full-v2 with random weights, no files."""
    torch.manual_seed(SEED)
    model, _, preprocess = open_clip.create_model_and_transforms(
        "coca_ViT-L-14", pretrained=None, precision="fp32")
    # open_clip leaves the decoder's output projection uninitialised (torch.empty).
    width = model.text_decoder.text_projection.shape[0]
    torch.nn.init.normal_(model.text_decoder.text_projection, std=width**-0.5)
    tokenizer = open_clip.get_tokenizer("coca_ViT-L-14")
    captioner = Captioner(model.eval(), preprocess, tokenizer, device=device, dtype=dtype,
                          beams=beams, max_tokens=max_tokens)
    pipe = AudioLDMPipeline(**real_size_audioldm_components())
    generator = SoundGenerator(pipe, device=device, dtype=dtype)
    return Pipeline(captioner, generator, prompt_template=GenerationConfig().prompt_template)


def tiny_pipeline(device: str, beams: int, max_tokens: int) -> Pipeline:
    config = parse_config({"models": {"preset": "tiny", "device": device},
                           "generation": {"caption_beams": beams,
                                          "caption_max_tokens": max_tokens}}, environ={})
    return ModelLoader(config).pipeline()


# -- measuring ---------------------------------------------------------------------------------

def pictures(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(SEED)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (320, 240), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = (int(v) for v in rng.integers(0, 280, 2))
            draw.rectangle((x, y, x + 40, y + 30),
                           fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        out.append(img)
    return out


def encode_all(results: list[PipelineResult]) -> float:
    """Seconds to encode every clip as the bot does: OGG/Opus and MP3."""
    started = time.perf_counter()
    for r in results:
        for fmt in ("ogg", "mp3"):
            encode_clip(r.audio, r.sample_rate, fmt)
    return time.perf_counter() - started


def measure(run: Callable[[], list[PipelineResult]]) -> dict[str, float]:
    started = time.perf_counter()
    results = run()
    total = time.perf_counter() - started
    encode = encode_all(results)
    return {"caption": results[0].timings["caption_s"], "sound": results[0].timings["sound_s"],
            "encode": encode, "total": total + encode}


def add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + v for k, v in b.items()}


def params(module: Any) -> str:
    count = sum(p.numel() for p in module.parameters())
    return f"{count / 1e6:.1f} M" if count >= 1e6 else f"{count / 1e3:.0f} k"


def describe(pipeline: Pipeline) -> str:
    pipe = pipeline.generator.pipe
    parts = [f"CoCa {params(pipeline.captioner.model)}"] if pipeline.captioner else []
    parts += [f"{name} {params(getattr(pipe, name))}"
              for name in ("unet", "vae", "text_encoder", "vocoder")]
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=("tiny", "real-random"), default="tiny")
    ap.add_argument("--n", type=int, default=4, help="images (default 4)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--scheduler", choices=("ddim", "dpm"), default="dpm")
    ap.add_argument("--beams", type=int, default=2, help="caption beams (bot default 6)")
    ap.add_argument("--max-tokens", type=int, default=8, help="caption tokens (bot default 30)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device, dtype = resolve_device(args.device)
    started = time.perf_counter()
    if args.preset == "tiny":
        pipeline = tiny_pipeline(args.device, args.beams, args.max_tokens)
    else:
        pipeline = real_random_pipeline(device, dtype, args.beams, args.max_tokens)
    build_s = time.perf_counter() - started
    options = GenerationOptions(seconds=args.seconds, steps=args.steps, scheduler=args.scheduler,
                                guidance_scale=2.5, negative_prompt="low quality")
    inputs = [PipelineInput(image=img, seed=i) for i, img in enumerate(pictures(args.n))]

    pipeline.run(inputs[:1], options)  # warm-up: first-call allocations and lazy set-up
    sequential: dict[str, float] = {}
    for item in inputs:
        sequential = add(sequential, measure(lambda item=item: pipeline.run([item], options)))
    batch = measure(lambda: pipeline.run(inputs, options))

    print(f"Sonify pipeline benchmark: preset {args.preset}, {device.type} "
          f"({str(dtype).removeprefix('torch.')}), torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"N={args.n} images, {args.seconds:g} s clips, {args.steps} steps ({args.scheduler}), "
          f"guidance 2.5, captions {args.beams} beams x {args.max_tokens} tokens; "
          f"models built/loaded in {build_s:.1f} s")
    print(f"parameters: {describe(pipeline)}")
    print()
    n = args.n
    print(f"{'stage':<8} {f'sequential ({n}x1)':>18} {f'batch (1x{n})':>14} {'batch/seq':>10}")
    for stage in ("caption", "sound", "encode", "total"):
        seq, bat = sequential[stage], batch[stage]
        ratio = bat / seq if seq > 0 else float("nan")
        print(f"{stage:<8} {seq:>16.2f} s {bat:>12.2f} s {ratio:>10.2f}")
    print(f"{'per image':<8} {sequential['total'] / n:>16.2f} s {batch['total'] / n:>12.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
