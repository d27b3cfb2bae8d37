"""The tiny CoCa folder: deterministic weights, atomic build, reuse, loadable by open_clip."""

from __future__ import annotations

import threading
from pathlib import Path

import open_clip
import torch
from open_clip.coca_model import CoCa
from PIL import Image

from core.models.tiny.coca import CONFIG_FILE, WEIGHTS_FILE, build_tiny_coca


def test_same_seed_gives_identical_weights(tmp_path: Path) -> None:
    torch.manual_seed(99)  # the global RNG state must not matter
    first = build_tiny_coca(tmp_path / "a")
    torch.manual_seed(5)
    second = build_tiny_coca(tmp_path / "b")
    assert (first / WEIGHTS_FILE).read_bytes() == (second / WEIGHTS_FILE).read_bytes()
    assert (first / CONFIG_FILE).read_text() == (second / CONFIG_FILE).read_text()


def test_reused_when_present(tmp_path: Path) -> None:
    folder = build_tiny_coca(tmp_path)
    stamp = (folder / WEIGHTS_FILE).stat().st_mtime_ns
    assert build_tiny_coca(tmp_path) == folder
    assert (folder / WEIGHTS_FILE).stat().st_mtime_ns == stamp


def test_incomplete_folder_is_rebuilt(tmp_path: Path) -> None:
    good = build_tiny_coca(tmp_path / "good")
    broken = tmp_path / "broken" / good.name
    broken.mkdir(parents=True)
    (broken / CONFIG_FILE).write_text("{}")
    assert build_tiny_coca(tmp_path / "broken") == broken
    assert (broken / WEIGHTS_FILE).read_bytes() == (good / WEIGHTS_FILE).read_bytes()


def test_racing_builders_share_one_folder(tmp_path: Path) -> None:
    barrier = threading.Barrier(3)
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        barrier.wait()
        try:
            results.append(build_tiny_coca(tmp_path))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(results) == 3 and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [results[0].name]  # no temp debris
    assert sorted(p.name for p in results[0].iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])


def test_loads_as_coca_through_local_dir(tmp_path: Path) -> None:
    folder = build_tiny_coca(tmp_path)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    model.eval()
    assert isinstance(model, CoCa)
    assert preprocess(Image.new("RGB", (100, 80))).shape == (3, 64, 64)
    assert 2_500_000 < sum(p.numel() for p in model.parameters()) < 4_000_000
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    assert (tokenizer.sot_token_id, tokenizer.eot_token_id) == (49406, 49407)
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        latent, embs = model._encode_image(pixels)
        logits = model(pixels, torch.full((2, 1), 49406), image_latent=latent, image_embs=embs,
                       output_labels=False)["logits"][:, -1]
    assert logits.shape == (2, 49408)
    # The decoder projection is drawn, not left as uninitialised memory (zeros or garbage).
    assert torch.isfinite(logits).all() and logits.std() > 0.1
    assert not torch.equal(logits[0], logits[1])  # the image matters
