"""A tiny random-weight CLAP model (text + audio towers) saved as a transformers folder."""

from __future__ import annotations

from pathlib import Path

import torch

from core.models.tiny.audioldm import (
    SEED,
    offline_roberta_tokenizer,
    save_once,
    tiny_clap_feature_extractor,
    tiny_clap_model,
)

# Folder names carry a version so a changed recipe never reuses a stale build.
CLAP_DIR = "clap-v1"


class _ClapFolder:
    """What `ClapScorer.from_pretrained` reads: the model, its tokenizer, its feature extractor."""

    def __init__(self) -> None:
        torch.manual_seed(SEED)
        self.model = tiny_clap_model().eval()
        self.tokenizer = offline_roberta_tokenizer(77)
        self.feature_extractor = tiny_clap_feature_extractor()

    def save_pretrained(self, folder: Path) -> None:
        for part in (self.model, self.tokenizer, self.feature_extractor):
            part.save_pretrained(folder)


def build_tiny_clap(root: Path) -> Path:
    """Build (once) a tiny random CLAP under `root` and return its folder."""
    return save_once(Path(root) / CLAP_DIR, _ClapFolder, marker="config.json")
