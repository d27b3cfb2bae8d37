"""A tiny random-weight CoCa (same open_clip class as the real one) for tests and smoke runs."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from open_clip.coca_model import CoCa
from safetensors.torch import save_file

# The folder name carries a version so a changed recipe never reuses a stale build.
FOLDER = "coca-v1"
SEED = 1234
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

# ≈3.2 M parameters, nearly all in the 49408-token embedding and output projection:
# the vocabulary stays full size so open_clip's real SimpleTokenizer fits.
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 64,
        "patch_size": 16,
        "width": 32,
        "layers": 1,
        "head_width": 16,
        "attentional_pool": True,
        "attn_pooler_heads": 2,
        "attn_pooler_queries": 16,
        "output_tokens": True,
    },
    "text_cfg": {
        "context_length": 76,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 1,
        "embed_cls": True,
        "output_tokens": True,
    },
    "multimodal_cfg": {
        "context_length": 76,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 1,
        "attn_pooler_heads": 2,
    },
    "custom_text": True,
}

PREPROCESS_CFG: dict[str, Any] = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def _is_complete(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


_UNINITIALISED = ("text_decoder.text_projection",)  # torch.empty in open_clip 3.3.0


def _init_std(name: str, shape: torch.Size) -> float:
    if name.endswith(("embedding", "embedding.weight", "cls_emb", "attn_pool.query")):
        return 0.02
    if len(shape) < 2:
        return 0.02  # Linear biases
    if name.endswith(("text_projection", "visual.proj")):
        return math.pow(shape[0], -0.5)  # used as x @ P
    return math.pow(torch.Size(shape[1:]).numel(), -0.5)  # (out, in, ...) weights


def _build_model() -> torch.nn.Module:
    """Build the CoCa and draw every random weight from a private seeded generator."""
    cfg = {k: v for k, v in MODEL_CFG.items() if k != "custom_text"}
    model: torch.nn.Module = CoCa(**cfg)
    # Redraw from our own generator rather than seeding torch's global RNG, which other
    # threads may use meanwhile. It also covers the decoder's output projection, which
    # open_clip leaves as torch.empty (whatever was in memory). Constant tensors
    # (LayerNorm ones, zero biases, logit_scale) are deterministic already.
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            drawn = param.numel() > 1 and not bool(torch.all(param == param.flatten()[0]))
            if drawn or name in _UNINITIALISED:
                param.copy_(torch.randn(param.shape, generator=gen) * _init_std(name, param.shape))
    return model.eval()


def _write_model_files(folder: Path) -> None:
    model = _build_model()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                      encoding="utf-8")


def build_tiny_coca(root: Path) -> Path:
    """Return the tiny CoCa as an open_clip `local-dir:` folder under `root`, built once."""
    root = Path(root)
    target = root / FOLDER
    if _is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Build in a private temp folder and rename it into place: a racing process either
    # wins the rename or finds the finished folder, never a half-written one.
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=root))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared read-only
    try:
        _write_model_files(tmp)
        if target.exists() and not _is_complete(target):
            shutil.rmtree(target, ignore_errors=True)  # debris from a crash before atomic builds
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
