"""One registry of sound backends: each entry has its class, its tiny model, its tests and its
documentation, and the configuration, the Hub look-ups and loading read nothing else."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import diffusers
import pytest
import torch

from core.config import ModelsConfig, parse_config
from core.errors import ConfigError
from core.models.backends import BACKENDS, Backend, backend_for
from core.models.loading import tiny_models
from core.models.sound import SoundGenerator, sound_dtype
from core.sound_backends import DEFAULT_SOUND_BACKEND, SOUND_BACKENDS
from tests.conftest import TINY_CACHE
from tests.core.models.conftest import CPU, FIXTURES

ROOT = Path(__file__).resolve().parents[3]


def test_every_entry_has_one_class_and_every_class_an_entry() -> None:
    assert set(BACKENDS) == set(SOUND_BACKENDS)
    for name, backend in BACKENDS.items():
        assert issubclass(backend, Backend) and backend.entry is SOUND_BACKENDS[name]
        assert hasattr(diffusers, backend.entry.pipeline_class), backend.entry.pipeline_class
    assert DEFAULT_SOUND_BACKEND in SOUND_BACKENDS


def test_a_second_class_for_one_entry_is_refused() -> None:
    with pytest.raises(TypeError, match="two backend classes for 'audioldm'"):
        type("AnotherAudioLDM", (Backend,), {"entry": SOUND_BACKENDS["audioldm"]})


@pytest.mark.parametrize("name", list(SOUND_BACKENDS))
def test_each_tiny_model_loads_as_its_backend(name: str) -> None:
    """The tiny builder makes the entry's pipeline class, and loading picks the entry's class."""
    models = tiny_models(ModelsConfig(preset="tiny", sound_backend=name,
                                      cache_dir=str(TINY_CACHE)))
    index = json.loads((Path(models.sound_model) / "model_index.json").read_text("utf-8"))
    assert index["_class_name"] == SOUND_BACKENDS[name].pipeline_class
    generator = SoundGenerator.from_config(models, CPU, torch.float32)
    assert type(generator.backend) is BACKENDS[name]
    assert type(backend_for(generator.pipe, CPU, torch.float32)) is BACKENDS[name]


def test_every_backend_is_a_fixture_of_the_shared_model_tests() -> None:
    """tests/core/models runs its `ALL` tests on each backend: a new one is tested likewise."""
    assert sorted(FIXTURES.values()) == sorted(SOUND_BACKENDS)


def test_the_configuration_offers_the_registry_and_its_defaults() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"models": {"sound_backend": "musicgen"}}, environ={})
    assert str(err.value).endswith(
        "use one of " + ", ".join(repr(name) for name in SOUND_BACKENDS))
    assert parse_config({}, environ={}).models.sound_backend == DEFAULT_SOUND_BACKEND
    plain = parse_config({}, environ={}).generation
    for name, entry in SOUND_BACKENDS.items():
        generation = parse_config({"models": {"sound_backend": name}}, environ={}).generation
        assert generation == replace(plain, **entry.generation_defaults), name


def test_the_dtype_rule_comes_from_the_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda")
    for name, entry in SOUND_BACKENDS.items():
        expected = torch.bfloat16 if entry.bf16_over_fp16 else torch.float16
        assert sound_dtype(name, cuda, torch.float16) == expected, name


def test_the_example_configuration_names_every_backend_and_its_default_model() -> None:
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    assert tomllib.loads(text)["models"]["sound_backend"] == DEFAULT_SOUND_BACKEND
    for name, entry in SOUND_BACKENDS.items():
        assert f'"{name}" ({entry.pipeline_class}' in text and entry.default_model in text


def test_the_docs_say_how_to_add_a_backend() -> None:
    section = (ROOT / "docs/developing/adding-a-sound-backend.md").read_text(encoding="utf-8")
    for part in ("core/sound_backends.py", "core/models/backends.py", "build_tiny", "FIXTURES"):
        assert part in section, part
