"""Model loading: device choice, models loaded once per loader, tiny preset, missing weights."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from huggingface_hub.errors import RepositoryNotFoundError

from core.errors import ConfigError, ModelMissingError
from core.models.loading import ModelLoader
from core.models.pipeline import Pipeline, PipelineInput
from core.models.precision import resolve_device
from core.models.quiet import download_problem, first_line
from core.models.sound import SoundGenerator
from core.models.tiny.audioldm import build_tiny_audioldm
from core.models.tiny.coca import build_tiny_coca
from core.options import GenerationOptions
from tests.conftest import TINY_CACHE, make_config

OPTIONS = GenerationOptions(seconds=1.0, steps=2, scheduler="ddim")


def test_resolve_device_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"\[models\] device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_loaded_once(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    loader = ModelLoader(config)
    tiny_pipeline = loader.pipeline()
    assert loader.pipeline() is tiny_pipeline
    # Other decoding settings give another Pipeline over the same loaded models.
    other = loader.pipeline(make_config(tmp_path, generation={"caption_beams": 1}).generation)
    assert other is not tiny_pipeline
    assert other.generator is tiny_pipeline.generator
    assert other.captioner is not None and tiny_pipeline.captioner is not None
    assert other.captioner.model is tiny_pipeline.captioner.model
    assert other.captioner.beams == 1


def test_loaders_share_nothing(tiny_pipeline: Pipeline, tmp_path: Path) -> None:
    """No module-level cache: another loader loads its own models."""
    fresh = ModelLoader(make_config(tmp_path)).pipeline()
    assert fresh is not tiny_pipeline
    assert fresh.generator is not tiny_pipeline.generator
    assert fresh.captioner is not None and tiny_pipeline.captioner is not None
    assert fresh.captioner.model is not tiny_pipeline.captioner.model


def test_tiny_preset_builds_under_cache_dir(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "models"
    config = make_config(tmp_path, models={"cache_dir": str(cache)})
    with caplog.at_level(logging.WARNING, logger="core.models.loading"):
        pipeline = ModelLoader(config).pipeline()
    assert (cache / "tiny" / "audioldm-v1" / "model_index.json").is_file()
    assert any(p.name.startswith("coca") for p in (cache / "tiny").iterdir())
    assert not [p for p in (cache / "tiny").iterdir() if p.name.startswith(".")]  # no temp dirs
    assert "NOISE" in caplog.text
    (result,) = pipeline.run([PipelineInput(caption="A bell.", seed=1)], OPTIONS)
    assert result.audio.shape == (16000,)


def test_tiny_builds_are_reproducible_and_reused(tmp_path: Path) -> None:
    first = build_tiny_audioldm(tmp_path / "a")
    stamp = (first / "model_index.json").stat().st_mtime_ns
    assert build_tiny_audioldm(tmp_path / "a") == first
    assert (first / "model_index.json").stat().st_mtime_ns == stamp
    second = build_tiny_audioldm(tmp_path / "b")
    cpu = torch.device("cpu")
    audio = [SoundGenerator.from_config(make_config(tmp_path, models={
        "sound_model": str(folder)}).models, cpu, torch.float32).render(["rain"], [3], OPTIONS)[0]
        .audio for folder in (first, second)]
    np.testing.assert_array_equal(audio[0], audio[1])


@pytest.mark.parametrize("caption_present", [False, True], ids=["caption", "sound"])
def test_missing_weights_is_one_line(tmp_path: Path, caption_present: bool,
                                     capfd: pytest.CaptureFixture[str],
                                     caplog: pytest.LogCaptureFixture) -> None:
    """Whichever model is missing, the error is one line; at INFO+ only the precision chosen."""
    models = {"preset": "default", "cache_dir": str(tmp_path / "c")}
    if caption_present:
        models["caption_path"] = str(build_tiny_coca(TINY_CACHE / "tiny"))
    config = make_config(tmp_path, models=models)
    caplog.set_level(logging.INFO)
    capfd.readouterr()
    started = time.monotonic()
    with pytest.raises(ModelMissingError) as info:
        ModelLoader(config).pipeline()
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "\n" not in message and "SONIFY_MODELS=tiny" in message
    if caption_present:
        assert message.startswith("Sound model") and "cvssp/audioldm-s-full-v2" in message
    else:
        assert message.startswith("Caption model") and "coca_ViT-L-14" in message
    assert capfd.readouterr().err == ""
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(said) == 1 and said[0].startswith("models run in ")


def test_load_error_helpers_keep_one_short_line() -> None:
    """The pieces of the one-line error: the cause's first line, cut at a word; the reason."""
    long = OSError("Cannot load model x: the model is not fully cached locally " * 8 + "\nmore")
    line = first_line(long)
    assert "\n" not in line and len(line) <= 165 and line.endswith(" ...")
    assert line.removesuffix(" ...") in str(long) and not line.endswith("loc ...")
    assert first_line(ValueError("")) == "ValueError"
    assert "offline or no network" in (download_problem(long) or "")
    response = httpx.Response(404, request=httpx.Request("GET", "http://127.0.0.1/missing"))
    try:
        try:
            raise RepositoryNotFoundError("404 Repository Not Found", response=response)
        except RepositoryNotFoundError as inner:
            raise OSError("wrapped by the library") from inner
    except OSError as outer:
        assert "check the name" in (download_problem(outer) or "")
    assert download_problem(ValueError("bad config value")) is None
