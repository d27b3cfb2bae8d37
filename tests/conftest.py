"""Shared fixtures: offline environment, a tiny-model configuration, one pipeline per session."""

from __future__ import annotations

import os

# Before any Hugging Face import: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Tiny models on a 2-core machine run 10x faster single-threaded (thread contention
# dominates); set before torch is imported so subprocesses inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost,::1")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost,::1")

from pathlib import Path

import pytest

from core.config import Config, parse_config

TINY_CACHE = Path(os.environ.get("SONIFY_TEST_CACHE", Path.home() / ".cache" / "sonify-tests"))


def make_config(tmp_path: Path, **sections: dict) -> Config:
    """A tiny-model config whose data lives under `tmp_path`; `sections` override keys."""
    data: dict[str, dict] = {
        "models": {"preset": "tiny", "device": "cpu", "cache_dir": str(TINY_CACHE)},
        "generation": {"seconds": 1.0, "steps": 2, "caption_beams": 2, "caption_max_tokens": 8},
        "images": {"allow_private_networks": True},
        "jobs": {"max_wait_ms": 20},
        "storage": {"data_dir": str(tmp_path / "data")},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data, source="test config", environ={})


@pytest.fixture
def tiny_config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """The tiny CoCa + AudioLDM pipeline, built (or loaded from disk) once per session."""
    from core.models import load_pipeline

    cfg = make_config(tmp_path_factory.mktemp("pipeline"))
    return load_pipeline(cfg)
