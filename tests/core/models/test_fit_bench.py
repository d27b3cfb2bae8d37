"""bench/fit_bench.py end to end on the tiny models: the path a GPU run with real weights takes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from tests.conftest import TINY_CACHE

BENCH = Path(__file__).resolve().parents[3] / "bench" / "fit_bench.py"


def fit_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fit_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_bench_prints_a_row_per_backend_and_takes_count(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, colour in enumerate(("red", "navy")):
        Image.new("RGB", (96, 64), colour).save(pictures / f"{i}.png")
    (pictures / "notes.txt").write_text("not a picture")
    out = tmp_path / "scores.json"
    code = fit_bench().main(["--preset", "tiny", "--cache-dir", str(TINY_CACHE),
                             "--images", str(pictures), "--seconds", "0.5", "--steps", "2",
                             "--backend", "audioldm", "--backend", "stable-audio-3",
                             "--candidates", "1,2", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    rows = [line.split() for line in table.splitlines()
            if line.startswith(("audioldm ", "stable-audio-3 "))]
    assert [(r[0], r[1]) for r in rows] == [("audioldm", "1"), ("audioldm", "2"),
                                            ("stable-audio-3", "1"), ("stable-audio-3", "2")]
    assert "2 pictures" in table and "numbers mean nothing" in table
    saved = json.loads(out.read_text())
    assert saved["pictures"] == ["0.png", "1.png"]
    for row in saved["rows"]:
        assert len(row["fit"]) == len(row["sound_s"]) == 2
        assert all(-1.0 <= f <= 1.0 for f in row["fit"])
        assert len(row["picked"]) == (2 if row["takes"] == 2 else 0)
