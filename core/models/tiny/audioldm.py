"""Tiny random-weight AudioLDM and AudioLDM 2 pipelines of the real classes, built offline."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tokenizers
import torch
from diffusers import (
    AudioLDM2Pipeline,
    AudioLDM2ProjectionModel,
    AudioLDM2UNet2DConditionModel,
    AudioLDMPipeline,
    AutoencoderKL,
    DDIMScheduler,
    UNet2DConditionModel,
)
from transformers import (
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    ClapTextModelWithProjection,
    GPT2Config,
    GPT2LMHeadModel,
    RobertaTokenizer,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from core.models.hub import quiet_construction

# Folder names carry a version so a changed recipe never reuses a stale build.
AUDIOLDM_DIR = "audioldm-v1"
AUDIOLDM2_DIR = "audioldm2-v1"
SEED = 0


def offline_roberta_tokenizer(model_max_length: int = 77) -> RobertaTokenizer:
    """A byte-level Roberta tokenizer (specials + 256 byte symbols, no merges), built offline."""
    # ByteLevel.alphabet() is a set whose order changes per process: sort it so ids are stable.
    symbols = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", *sorted(
        tokenizers.pre_tokenizers.ByteLevel.alphabet())]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}),
                                           encoding="utf-8")
        Path(tmp, "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer: RobertaTokenizer = RobertaTokenizer.from_pretrained(
            tmp, model_max_length=model_max_length)
        return tokenizer


def _tiny_t5_tokenizer() -> T5Tokenizer:
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(c, -3.0) for c in letters] + [("▁" + c, -3.0) for c in letters]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=77)


def _tiny_vocoder(initializer_range: float) -> SpeechT5HifiGan:
    # Upsample product 160 = the real hop at 16 kHz, so the pipeline sizes spectrograms as the
    # real model does (diffusers' dummy uses 4, which makes a 1 s clip 40x longer to render).
    return SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=8, sampling_rate=16000, upsample_initial_channel=16,
        upsample_rates=[5, 4, 4, 2], upsample_kernel_sizes=[10, 8, 8, 4],
        resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
        normalize_before=False, initializer_range=initializer_range))


def _tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(block_out_channels=[8, 16], in_channels=1, out_channels=1,
                         down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4,
                         norm_num_groups=8)


def _ddim_scheduler() -> DDIMScheduler:
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False)


def _in_eval_mode(components: dict[str, Any]) -> dict[str, Any]:
    # Modules built from configs start in train mode (dropout on): two identical calls would differ.
    for module in components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return components


def tiny_audioldm_components() -> dict[str, Any]:
    """Components of a tiny `AudioLDMPipeline` (CLAP text, UNet, VAE, HiFi-GAN), seeded."""
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=(8, 16),
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=8,
        class_embeddings_concat=True)
    torch.manual_seed(SEED)
    vae = _tiny_vae()
    torch.manual_seed(SEED)
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=8, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=1, num_hidden_layers=1, vocab_size=1000,
        projection_dim=8))
    torch.manual_seed(SEED)
    vocoder = _tiny_vocoder(initializer_range=0.2)
    return _in_eval_mode({"unet": unet, "scheduler": _ddim_scheduler(), "vae": vae,
                          "text_encoder": text_encoder,
                          "tokenizer": offline_roberta_tokenizer(77), "vocoder": vocoder})


def tiny_clap_model() -> ClapModel:
    """A small whole CLAP model (text and audio towers, 16-d projection); seed before calling."""
    text_config = ClapTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=2, num_hidden_layers=2, vocab_size=1000,
        projection_dim=16)
    audio_config = ClapAudioConfig(
        spec_size=64, window_size=4, num_mel_bins=64, layer_norm_eps=1e-05,
        depths=[2, 2], num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=192,
        projection_dim=16, patch_size=2, patch_stride=2, patch_embed_input_channels=4)
    # ClapConfig.from_text_audio_configs is gone in transformers 5.x.
    return ClapModel(ClapConfig(text_config=text_config.to_dict(),
                                audio_config=audio_config.to_dict(), projection_dim=16))


def tiny_clap_feature_extractor() -> ClapFeatureExtractor:
    """CLAP's 48 kHz mel front end with a long hop, so a 10 s window is 61 frames, not 1001."""
    return ClapFeatureExtractor(
        feature_size=64, sampling_rate=48000, hop_length=7900, max_length_s=10,
        fft_window_size=1024, truncation="fusion", padding="repeatpad")


def tiny_audioldm2_components() -> dict[str, Any]:
    """Components of a tiny `AudioLDM2Pipeline` (CLAP, T5, GPT-2, UNet, VAE, vocoder)."""
    torch.manual_seed(SEED)
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, sample_size=32,
        in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        # None = self-attention, 16 = GPT-2 width (generated embeds), 32 = T5 width.
        cross_attention_dim=([None, 16, 32], [None, 16, 32]))
    torch.manual_seed(SEED)
    vae = _tiny_vae()
    torch.manual_seed(SEED)
    clap = tiny_clap_model()
    feature_extractor = tiny_clap_feature_extractor()
    torch.manual_seed(SEED)
    t5 = T5EncoderModel(T5Config(vocab_size=128, d_model=32, d_ff=37, d_kv=8, num_heads=2,
                                 num_layers=2))
    torch.manual_seed(SEED)
    # GPT2Model fails in the pipeline's generation loop: it needs the LM-head class.
    language_model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=1000,
                                                n_positions=99, bos_token_id=0,
                                                eos_token_id=0))
    language_model.config.max_new_tokens = 8
    torch.manual_seed(SEED)
    projection = AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32,
                                          langauge_model_dim=16)
    torch.manual_seed(SEED)
    # The default initializer_range makes near-silent audio and ties every CLAP score.
    vocoder = _tiny_vocoder(initializer_range=0.2)
    return _in_eval_mode({"unet": unet, "scheduler": _ddim_scheduler(), "vae": vae,
                          "text_encoder": clap, "text_encoder_2": t5,
                          "projection_model": projection, "language_model": language_model,
                          "tokenizer": offline_roberta_tokenizer(77),
                          "tokenizer_2": _tiny_t5_tokenizer(),
                          "feature_extractor": feature_extractor, "vocoder": vocoder})


def save_once(target: Path, build: Callable[[], Any], marker: str = "model_index.json") -> Path:
    """Build a pipeline and `save_pretrained` it to `target` atomically, unless already there.

    `marker` is the file whose presence says a finished build is there.
    """
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared read-only
    try:
        build().save_pretrained(tmp)
        if target.exists() and not (target / marker).is_file():
            shutil.rmtree(target, ignore_errors=True)  # debris of a build killed mid-way
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / marker).is_file():
                raise  # not a concurrent builder winning the race: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def quietly(build: Callable[[], Any]) -> Callable[[], Any]:
    """`build`, minus the deprecation chatter (AudioLDM announces it on every construction)."""
    def run() -> Any:
        with quiet_construction():
            return build()
    return run


def build_tiny_audioldm(root: Path) -> Path:
    """Build (once) a tiny random `AudioLDMPipeline` under `root` and return its folder."""
    return save_once(Path(root) / AUDIOLDM_DIR,
                     quietly(lambda: AudioLDMPipeline(**tiny_audioldm_components())))


def build_tiny_audioldm2(root: Path) -> Path:
    """Build (once) a tiny random `AudioLDM2Pipeline` under `root` and return its folder."""
    return save_once(Path(root) / AUDIOLDM2_DIR,
                     quietly(lambda: AudioLDM2Pipeline(**tiny_audioldm2_components())))
