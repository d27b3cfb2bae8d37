"""[models] dtype: fp16 on CUDA, bf16 on a CPU only when it is native AND measured faster."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from core.config import parse_config
from core.errors import ConfigError
from core.models import precision
from core.models.loading import ModelLoader
from core.models.precision import choose_precision, probe_bf16_speedup
from tests.conftest import make_config, tiny_sections


def fake_cpu(monkeypatch: pytest.MonkeyPatch, native: str, speedup: float) -> list[int]:
    probes: list[int] = []

    def probe() -> float:
        probes.append(1)
        return speedup

    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    monkeypatch.setattr(precision, "probe_bf16_speedup", probe)
    return probes


def test_auto_picks_bf16_on_a_cpu_with_native_bf16_that_the_probe_finds_faster(
        monkeypatch: pytest.MonkeyPatch) -> None:
    probes = fake_cpu(monkeypatch, "AMX bf16", 11.84)
    chosen = choose_precision("cpu", "auto")
    assert (chosen.device, chosen.dtype) == (torch.device("cpu"), torch.bfloat16)
    assert chosen.describe() == ("models run in bf16 on the CPU: AMX bf16 found, probe 11.8x "
                                 "faster than fp32")
    assert probes == [1]


@pytest.mark.parametrize(("native", "speedup", "why"), [
    ("", 20.0, "no native bf16 found"),
    ("AVX-512 BF16", 1.6, "AVX-512 BF16 found, but the probe ran bf16 only 1.6x faster"),
])
def test_auto_stays_fp32_without_native_bf16_or_without_a_measured_gain(
        monkeypatch: pytest.MonkeyPatch, native: str, speedup: float, why: str) -> None:
    probes = fake_cpu(monkeypatch, native, speedup)
    chosen = choose_precision("cpu")
    assert chosen.dtype == torch.float32
    assert chosen.describe().startswith(f"models run in fp32 on the CPU: {why}")
    assert len(probes) == (1 if native else 0)  # no native bf16: nothing worth probing


def test_explicit_dtype_wins_and_tiny_models_stay_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    probes = fake_cpu(monkeypatch, "AMX bf16", 11.0)
    assert choose_precision("cpu", "fp32").dtype == torch.float32
    assert choose_precision("cpu", "bf16").describe() == \
        "models run in bf16 on the CPU: [models] dtype = 'bf16'"
    assert choose_precision("cpu", "auto", test_models=True).dtype == torch.float32
    assert probes == []
    with pytest.raises(ConfigError, match=r"\[models\] dtype"):
        choose_precision("cpu", "int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_still_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        choose_precision("cuda", "fp16")


def test_config_accepts_the_four_dtypes_only(tmp_path: Path) -> None:
    for value in ("auto", "fp32", "bf16", "fp16"):
        assert make_config(tmp_path, models={"dtype": value}).models.dtype == value
    with pytest.raises(ConfigError, match=r"\[models\] dtype"):
        parse_config(tiny_sections(tmp_path, models={"dtype": "float32"}), environ={})


def test_the_probe_measures_this_machine() -> None:
    speedup = probe_bf16_speedup(size=128, repeats=1)
    assert 0 < speedup < float("inf")


def test_the_loader_says_which_precision_and_why_in_one_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="core.models.loading")
    loader = ModelLoader(make_config(tmp_path))
    assert loader.dtype == torch.float32
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("models run")]
    assert lines == ["models run in fp32 on the CPU: the tiny test models stay in fp32 under "
                     "dtype 'auto'"]
