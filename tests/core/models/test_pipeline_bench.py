"""bench/pipeline_bench.py end to end on the tiny models: the figures it prints, in columns."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


def test_the_bench_names_the_machine_and_puts_every_stage_against_its_bound(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    roofline = importlib.import_module("roofline")
    monkeypatch.setattr(roofline, "PEAK_SIZE", 256)  # the machine's limits, measured quickly
    monkeypatch.setattr(roofline, "STREAM_BYTES", 8 * 2**20)
    bench = importlib.import_module("pipeline_bench")
    assert bench.main(["--preset", "tiny", "--n", "2", "--backend", "stable-audio-3",
                       "--dtype", "fp32", "--caption-batches", "1,3", "--beams", "2",
                       "--max-tokens", "4", "--seconds", "0.5", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("processor: ") and lines[1].startswith("native bf16: ")
    assert lines[2].startswith("load average: ")
    assert re.search(r"matmul peak GFLOP/s: fp32 [\d,]+, bf16 [\d,]+; a 6-row matmul streams "
                     r"weights at GB/s: fp32 [\d.]+, bf16 [\d.]+", out)
    assert "models run in fp32 on the CPU: [models] dtype = 'fp32'" in out
    # The caption: first picture, by batch size, and one decoder step early and late.
    assert re.search(r"the first picture after loading: [\d.]+ s", out)
    assert re.search(r"^ +3 +[\d.]+ s +[\d.]+ +[\d.]+ +[\d.]+ s +[\d.]+$", out, re.M)
    assert re.search(r"decoder step, 2 beams of 1 picture: token 1: [\d.]+ ms .*token 4: "
                     r"[\d.]+ ms .*token 4 / token 1 = [\d.]+", out)
    # Each stage: first, later, batch, and against its roofline bound.
    for stage in ("caption", "sound"):
        assert re.search(rf"^ +{stage} +([\d.]+ s +){{3}}[\d.]+ +[\d.]+ +[\d.]+ s +[\d.]+$",
                         out, re.M), stage
    assert re.search(r"^stable-audio-3 +\d+ k +2 +1 +", out, re.M)
