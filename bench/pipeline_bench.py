"""Pipeline benchmark: N images one by one vs. as one batch, per stage, per sound backend.

Usage: .venv/bin/python bench/pipeline_bench.py --preset tiny|real-random [--n N]
       [--backend audioldm|audioldm2|stable-audio-3 ...] [--candidates K]
       [--device auto|cpu|cuda] [--seconds S] [--steps K] [--beams B] [--max-tokens T]

`tiny` loads the tiny random test models through the real loading code (ModelLoader).
`real-random` builds the real ARCHITECTURES at full size with random weights (no download):
CoCa from open_clip's shipped coca_ViT-L-14.json, AudioLDM s-full-v2 and Stable Audio 3
small-sfx from the component configs below, so its timings are honest for the real models'
size (not their output). Each backend runs with its own defaults (steps, guidance) unless
--steps is given; one table per backend, then a summary side by side.
"""

from __future__ import annotations

import argparse
import gc
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
from PIL import Image, ImageDraw
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

from core.audio.encode import encode_clip
from core.config import Config, parse_config
from core.models.captioner import Captioner
from core.models.clap import ClapScorer, Scorer
from core.models.hub import quiet_construction
from core.models.loading import ModelLoader
from core.models.pipeline import Pipeline, PipelineInput, PipelineResult
from core.models.precision import choose_precision
from core.models.sound import SoundGenerator, auto_candidates, sound_dtype
from core.models.tiny.audioldm import offline_roberta_tokenizer
from core.models.tiny.stable_audio3 import tiny_gemma_tokenizer
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
    model, _, preprocess = open_clip.create_model_and_transforms(
        "coca_ViT-L-14", pretrained=None, precision="fp32")
    # open_clip leaves the decoder's output projection uninitialised (torch.empty).
    width = model.text_decoder.text_projection.shape[0]
    torch.nn.init.normal_(model.text_decoder.text_projection, std=width**-0.5)
    tokenizer = open_clip.get_tokenizer("coca_ViT-L-14")
    return Captioner(model.eval(), preprocess, tokenizer, device=device, dtype=dtype,
                     beams=beams, max_tokens=max_tokens)


def bench_config(backend: str, args: argparse.Namespace) -> Config:
    """The configuration a backend runs under here: its own step and guidance defaults."""
    generation: dict[str, Any] = {
        "caption_beams": args.beams, "caption_max_tokens": args.max_tokens,
        "seconds": args.seconds, "scheduler": args.scheduler, "negative_prompt": "low quality",
        "candidates": args.candidates}
    if args.steps:
        generation["steps"] = args.steps
    return parse_config({"models": {"preset": "tiny", "device": args.device,
                                    "sound_backend": backend},
                         "generation": generation}, environ={})


def build_pipeline(backend: str, args: argparse.Namespace, config: Config,
                   captioner: Captioner | None, device: torch.device,
                   dtype: torch.dtype) -> Pipeline:
    template = config.generation.prompt_template
    if args.preset == "tiny":
        loader = ModelLoader(config)
        if captioner is None:
            return loader.pipeline()
        return Pipeline(captioner, loader.sound_generator(), prompt_template=template)
    if backend not in REAL_SIZE:
        raise SystemExit(f"--preset real-random has no {backend} build; use "
                         f"{' or '.join(REAL_SIZE)}")
    pipeline_cls, components = REAL_SIZE[backend]
    dtype = sound_dtype(backend, device, dtype)
    with quiet_construction():
        pipe = pipeline_cls(**components())
    needs_clap = (args.candidates or auto_candidates(device)) > 1
    scorer: Scorer | None = real_size_clap(device, dtype) if needs_clap else None
    generator = SoundGenerator(pipe, device=device, dtype=dtype, scorer=scorer)
    return Pipeline(captioner, generator, prompt_template=template)


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


def count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def params(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


SOUND_PARTS = ("unet", "transformer", "vae", "text_encoder", "vocoder", "duration_embedder")


def describe(pipeline: Pipeline) -> tuple[str, int]:
    """The parts and their sizes, and the sound model's total parameter count."""
    pipe = pipeline.generator.pipe
    parts = [(name, count(getattr(pipe, name))) for name in SOUND_PARTS
             if isinstance(getattr(pipe, name, None), torch.nn.Module)]
    text = ", ".join(f"{name} {params(n)}" for name, n in parts)
    if pipeline.captioner:
        text = f"CoCa {params(count(pipeline.captioner.model))}, " + text
    return text, sum(n for _, n in parts)


def run_backend(backend: str, args: argparse.Namespace, captioner: Captioner | None,
                device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Build one backend's pipeline, time it one by one and as one batch, print its table."""
    config = bench_config(backend, args)
    started = time.perf_counter()
    pipeline = build_pipeline(backend, args, config, captioner, device, dtype)
    build_s = time.perf_counter() - started
    options = GenerationOptions.from_config(config.generation)
    inputs = [PipelineInput(image=img, seed=i) for i, img in enumerate(pictures(args.n))]

    pipeline.run(inputs[:1], options)  # warm-up: first-call allocations and lazy set-up
    sequential: dict[str, float] = {}
    for item in inputs:
        sequential = add(sequential, measure(lambda item=item: pipeline.run([item], options)))
    batch = measure(lambda: pipeline.run(inputs, options))

    parts, sound_params = describe(pipeline)
    generator = pipeline.generator
    takes = generator.candidate_count(options)
    dtype_name = str(generator.dtype).removeprefix("torch.")
    print(f"== {backend}: {args.seconds:g} s clips at {generator.sample_rate} Hz x "
          f"{generator.channels} ch, {options.steps} steps, guidance {options.guidance_scale:g}, "
          f"{takes} take(s) per image, {dtype_name}; built/loaded in {build_s:.1f} s")
    print(f"   parameters: {parts}")
    n = args.n
    print(f"   {'stage':<8} {f'sequential ({n}x1)':>18} {f'batch (1x{n})':>14} {'batch/seq':>10}")
    for stage in ("caption", "sound", "encode", "total"):
        seq, bat = sequential[stage], batch[stage]
        ratio = bat / seq if seq > 0 else float("nan")
        print(f"   {stage:<8} {seq:>16.2f} s {bat:>12.2f} s {ratio:>10.2f}")
    print(f"   {'per image':<8} {sequential['total'] / n:>16.2f} s {batch['total'] / n:>12.2f} s")
    print()
    return {"backend": backend, "params": sound_params, "steps": options.steps, "takes": takes,
            "sound_seq": sequential["sound"] / n, "sound_batch": batch["sound"] / n,
            "total_batch": batch["total"] / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", choices=("tiny", "real-random"), default="tiny")
    ap.add_argument("--backend", action="append", choices=("audioldm", "audioldm2",
                                                           "stable-audio-3"),
                    help="sound backend (repeat for several; default audioldm and stable-audio-3)")
    ap.add_argument("--n", type=int, default=4, help="images (default 4)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=0,
                    help="diffusion steps (0: each backend's default: AudioLDM 20, SA3 8)")
    ap.add_argument("--candidates", type=int, default=1,
                    help="takes per image, best kept by CLAP (0: auto for the device)")
    ap.add_argument("--scheduler", choices=("ddim", "dpm"), default="dpm")
    ap.add_argument("--beams", type=int, default=2, help="caption beams (bot default 6)")
    ap.add_argument("--max-tokens", type=int, default=8, help="caption tokens (bot default 30)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    backends = args.backend or ["audioldm", "stable-audio-3"]

    precision = choose_precision(args.device, args.dtype)
    device, dtype = precision.device, precision.dtype
    print(f"Sonify pipeline benchmark: preset {args.preset}, {device.type} "
          f"({str(dtype).removeprefix('torch.')}), torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"N={args.n} images, captions {args.beams} beams x {args.max_tokens} tokens")
    print()
    captioner = None
    if args.preset == "real-random":  # one CoCa for every backend: building it takes a while
        captioner = real_size_captioner(device, dtype, args.beams, args.max_tokens)
    rows = []
    for backend in backends:
        rows.append(run_backend(backend, args, captioner, device, dtype))
        gc.collect()  # the previous backend's weights go before the next one is built

    print("side by side (per image; sound = the sound stage alone, total = caption + sound + "
          "encode, batched)")
    print(f"{'backend':<16} {'sound params':>12} {'steps':>5} {'takes':>5} "
          f"{'sound 1x1':>10} {f'sound 1x{args.n}':>10} {'total':>8}")
    for r in rows:
        print(f"{r['backend']:<16} {params(r['params']):>12} {r['steps']:>5} {r['takes']:>5} "
              f"{r['sound_seq']:>8.2f} s {r['sound_batch']:>8.2f} s {r['total_batch']:>6.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
