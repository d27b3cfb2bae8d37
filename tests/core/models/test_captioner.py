"""Captioner: our own CoCa decoding (greedy, beam search), clean captions, one-line load errors."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from core.config import GenerationConfig, ModelsConfig
from core.errors import ConfigError, ModelMissingError
from core.models.caption_decoder import DecodeState, StepDecoder
from core.models.captioner import Captioner, clean_caption
from core.models.tiny.coca import build_tiny_coca
from tests.conftest import TINY_CACHE

CPU = torch.device("cpu")
SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return build_tiny_coca(TINY_CACHE / "tiny")


def load(folder: Path, **generation: int) -> Captioner:
    models = ModelsConfig(caption_path=str(folder))
    return Captioner.from_config(models, GenerationConfig(**generation), CPU, torch.float32)


@pytest.fixture(scope="module")
def captioner(tiny_dir: Path) -> Captioner:
    return load(tiny_dir, caption_beams=6, caption_max_tokens=8)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    sizes = [(80, 100), (64, 64), (120, 70), (90, 90)]
    out = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    out[2] = out[2].convert("L")  # grey and RGBA inputs are converted, not rejected
    out[3] = out[3].convert("RGBA")
    return out


# -- clean_caption --------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "clean"), [
    ("a dog running on the beach . ", "A dog running on the beach."),
    ("<start_of_text>a dog running on the beach . <end_of_text>", "A dog running on the beach."),
    ("<start_of_text>a cat on a sofa <end_of_text>a cat on a sofa", "A cat on a sofa."),
    ("a man 's bicycle , parked near a wall . ", "A man's bicycle, parked near a wall."),
    ("a black - and - white photo of a train ", "A black-and-white photo of a train."),
    ("a sign that says \" stop \" . ", 'A sign that says "stop".'),
    ("a plate of food ( with a fork ) . . ", "A plate of food (with a fork)."),
    ("two dogs playing in the snow , ", "Two dogs playing in the snow."),
    ("is this a bird ? ", "Is this a bird?"),
    ("  . a    red   car  ", "A red car."),
    ("<start_of_text><end_of_text>", ""),
    ("", ""),
])
def test_clean_caption(raw: str, clean: str) -> None:
    assert clean_caption(raw) == clean


# -- decoding on the tiny CoCa (random weights: junk words, so check the contract) ----

def test_beam_width_one_equals_greedy(captioner: Captioner, images: list[Image.Image]) -> None:
    pixels = captioner.pixels(images)
    for max_tokens in (4, 11):
        greedy = captioner.decode_greedy(pixels, max_tokens=max_tokens)
        assert captioner.decode_beam(pixels, beams=1, max_tokens=max_tokens) == greedy
    assert captioner.caption(images, beams=1) == [captioner.to_text(r) for r in
                                                  captioner.decode_greedy(pixels)]


def test_beam_search_differs_from_greedy(captioner: Captioner,
                                         images: list[Image.Image]) -> None:
    # Guards against a beam search that silently degenerates to greedy.
    pixels = captioner.pixels(images)
    assert captioner.decode_beam(pixels, beams=6) != captioner.decode_greedy(pixels)


@pytest.mark.parametrize("beams", [1, 3, 6])
def test_batch_equals_single_calls(captioner: Captioner, images: list[Image.Image],
                                   beams: int) -> None:
    pixels = captioner.pixels(images)
    decode = captioner.decode_greedy if beams == 1 else (
        lambda px, **kw: captioner.decode_beam(px, beams=beams, **kw))
    batched = decode(pixels, max_tokens=6)
    singles = [decode(pixels[i:i + 1], max_tokens=6)[0] for i in range(len(images))]
    assert batched == singles
    assert len({tuple(ids) for ids in batched}) > 1  # different images, different captions


def test_caption_is_batched_and_deterministic(tiny_dir: Path, captioner: Captioner,
                                              images: list[Image.Image]) -> None:
    first = captioner.caption(images)
    assert captioner.caption(images) == first
    assert [captioner.caption([img])[0] for img in images] == first
    # Saved weights reloaded through the real local-dir path give the same captions.
    assert load(tiny_dir, caption_beams=6, caption_max_tokens=8).caption(images) == first
    assert captioner.caption([]) == []


def test_name_and_pretrained_file(tmp_path: Path, tiny_dir: Path, captioner: Captioner,
                                  images: list[Image.Image]) -> None:
    # The model-name path (as for coca_ViT-L-14) with a registered config and a weights file.
    config = json.loads((tiny_dir / "open_clip_config.json").read_text())["model_cfg"]
    (tmp_path / "sonify-test-coca.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "sonify-test-coca.json")
    models = ModelsConfig(caption_model="sonify-test-coca", cache_dir=str(tmp_path / "cache"),
                          caption_pretrained=str(tiny_dir / "open_clip_model.safetensors"))
    by_name = Captioner.from_config(models, GenerationConfig(caption_beams=6,
                                                             caption_max_tokens=8),
                                    CPU, torch.float32)
    assert by_name.caption(images) == captioner.caption(images)


def test_max_tokens_and_no_special_tokens(captioner: Captioner,
                                          images: list[Image.Image]) -> None:
    pixels = captioner.pixels(images)
    for max_tokens in (1, 5, 9):
        for ids in (captioner.decode_greedy(pixels, max_tokens=max_tokens)
                    + captioner.decode_beam(pixels, beams=3, max_tokens=max_tokens)):
            assert 1 <= len(ids) <= max_tokens
            assert SOT not in ids and EOT not in ids
    for text in captioner.caption(images, beams=2, max_tokens=6):
        assert text and text == text.strip() and text[-1] in ".!?"
        assert "<" not in text and " ." not in text and "</w>" not in text
    with pytest.raises(ValueError, match="beams"):
        captioner.caption(images, beams=0)


def test_half_precision_on_cuda_decodes_under_autocast(captioner: Captioner,
                                                        images: list[Image.Image]) -> None:
    """CUDA's fp16: weights and pixels stay fp32, autocast runs the decoder in fp16.

    CPU autocast stands in for CUDA's here (`autocast=True`); the code path is the same.
    """
    half = Captioner(captioner.model, captioner.preprocess, captioner.tokenizer,
                     dtype=torch.float16, beams=3, max_tokens=6, autocast=True)
    seen: list[torch.dtype] = []
    mlp = half.model.text_decoder.cross_attn[-1].mlp  # the decoder's last layer
    hook = mlp.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        pixels = half.pixels(images)
        assert pixels.dtype == torch.float32
        assert half.decode_beam(pixels, beams=1) == half.decode_greedy(pixels)
        texts = half.caption(images)
        assert set(seen) == {torch.float16}
        seen.clear()
        captioner.caption(images[:1], beams=1, max_tokens=2)
        assert set(seen) == {torch.float32}  # fp32 stays fp32: no autocast on the CPU default
    finally:
        hook.remove()
    assert len(texts) == len(images) and all(t and t[-1] in ".!?" for t in texts)
    assert next(half.model.parameters()).dtype == torch.float32


# -- decoding on a scripted model whose answers are known ------------------------------

WORDS = ["a", "dog", "cat", ".", "<start_of_text>", "<end_of_text>"]
A, DOG, CAT, DOT, S, E = range(6)


class WordTokenizer:
    sot_token_id, eot_token_id = S, E

    def decode(self, ids: list[int]) -> str:
        return "".join(WORDS[i] + " " for i in ids)


class ScriptedCoCa(torch.nn.Module):
    """Encodes an image as its pixel value: which table of ScriptedDecoder answers for it."""

    context_length = 76

    def _encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        which = images[:, 0, 0, 0].round().long()
        return which[:, None].float(), which[:, None, None].float()


class ScriptedState(DecodeState):
    def __init__(self, which: torch.Tensor) -> None:
        self.which = which  # each row's table

    def select(self, rows: torch.Tensor, images: torch.Tensor) -> None:
        self.which = self.which[rows]


class ScriptedDecoder(StepDecoder):
    """Next-token probabilities depend on the image (its table) and the last token."""

    def __init__(self, tables: list[dict[int, dict[int, float]]]) -> None:
        self.logp = torch.full((len(tables), 6, 6), -30.0)
        for image, table in enumerate(tables):
            for last, probs in table.items():
                for tok, p in probs.items():
                    self.logp[image, last, tok] = float(np.log(p))

    def start(self, image_latent: torch.Tensor, image_embs: torch.Tensor, per_image: int,
              max_len: int) -> ScriptedState:
        return ScriptedState(image_latent[:, 0].long().repeat_interleave(per_image))

    def step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        assert isinstance(state, ScriptedState)
        return self.logp[state.which, tokens]


# Greedy takes "a" (0.5) then "dog"; beam search finds "dog" + end (0.36, the better
# length-normalised score). Raw sums would prefer the same; see LONG for normalisation.
TRAP = {S: {A: 0.5, DOG: 0.4}, A: {DOG: 0.31, CAT: 0.3, E: 0.05}, DOG: {E: 0.9, DOT: 0.1},
        CAT: {E: 0.9, DOT: 0.1}, DOT: {E: 1.0}}
# "dog" + end has the higher raw log-probability (0.36 vs 0.324), "a cat" + end the
# higher per-token one: length normalisation must pick the longer caption.
LONG = {S: {DOG: 0.6, A: 0.4}, DOG: {E: 0.6, DOT: 0.4}, A: {CAT: 0.9, DOT: 0.1},
        CAT: {E: 0.9, DOT: 0.1}, DOT: {E: 1.0}}
# Never ends: only the length limit stops it.
LOOP = {S: {A: 0.9, DOG: 0.1}, A: {DOG: 0.8, A: 0.2}, DOG: {A: 0.8, DOG: 0.2}}


def scripted(*tables: dict[int, dict[int, float]], min_tokens: int = 0,
             length_penalty: float = 1.0) -> Captioner:
    def preprocess(img: Image.Image) -> torch.Tensor:
        return torch.full((3, 2, 2), float(img.getpixel((0, 0))[0]))

    return Captioner(ScriptedCoCa(), preprocess, WordTokenizer(), beams=4, max_tokens=10,
                     min_tokens=min_tokens, length_penalty=length_penalty,
                     decoder=ScriptedDecoder(list(tables)))


def pixels_for(*which: int) -> torch.Tensor:
    return torch.stack([torch.full((3, 2, 2), float(i)) for i in which])


def test_scripted_greedy_and_beam() -> None:
    cap = scripted(TRAP, LONG, LOOP)
    px = pixels_for(0, 1, 2)
    assert cap.decode_greedy(px) == [[A, DOG], [DOG], [A, DOG, A, DOG, A, DOG, A, DOG, A, DOG]]
    assert cap.decode_beam(px, beams=2) == [[DOG], [A, CAT], [A, DOG] * 5]
    assert cap.decode_beam(px, beams=1) == cap.decode_greedy(px)
    assert cap.decode_beam(px, beams=4, max_tokens=3) == [[DOG], [A, CAT], [A, DOG, A]]
    # Rows of one batch finish at different steps without disturbing each other.
    assert cap.decode_beam(pixels_for(2, 0, 1, 0), beams=3, max_tokens=4) == [
        [A, DOG, A, DOG], [DOG], [A, CAT], [DOG]]


def test_scripted_length_normalisation() -> None:
    assert scripted(LONG, length_penalty=0.0).decode_beam(pixels_for(0), beams=2) == [[DOG]]
    assert scripted(LONG, length_penalty=1.0).decode_beam(pixels_for(0), beams=2) == [[A, CAT]]


def test_scripted_min_tokens_and_text() -> None:
    cap = scripted(TRAP, min_tokens=3)
    for ids in cap.decode_greedy(pixels_for(0)) + cap.decode_beam(pixels_for(0), beams=3):
        assert len(ids) >= 3 and E not in ids and S not in ids
    img = Image.new("RGB", (4, 4), (1, 1, 1))
    assert scripted(TRAP, LONG).caption([img, img], beams=2) == ["A cat.", "A cat."]
    assert scripted(TRAP).caption([Image.new("RGB", (4, 4))], beams=1) == ["A dog."]


# -- loading errors --------------------------------------------------------------------

def assert_one_line(exc: BaseException, *needles: str) -> None:
    text = str(exc)
    assert "\n" not in text and len(text) < 400
    for needle in needles:
        assert needle in text
    # Raised `from None` (or outside any handler): no chained traceback to print.
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


def test_missing_default_weights_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         no_network: list[object],
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    models = ModelsConfig(cache_dir=str(tmp_path / "empty-cache"))
    start = time.perf_counter()
    with pytest.raises(ModelMissingError) as info:
        Captioner.from_config(models, GenerationConfig(), CPU, torch.float32)
    assert time.perf_counter() - start < 10
    assert_one_line(info.value, "coca_ViT-L-14", "mscoco_finetuned_laion2b_s13b_b90k",
                    "cannot be fetched",
                    "[models] caption_path", "SONIFY_MODELS=tiny")
    assert no_network == []
    # open_clip logs the failed download at ERROR (and chats at INFO): that stays in DEBUG,
    # so the one line above is all the user sees.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
    assert any("Failed to download" in r.getMessage() for r in caplog.records
               if r.name == "core.models.quiet")


def test_missing_weights_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         no_network: list[object]) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # The hub client retries refused connections with back-off (~24 s a file): skip the waits.
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    models = ModelsConfig(caption_model="coca_ViT-B-32", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ModelMissingError) as info:
        Captioner.from_config(models, GenerationConfig(), CPU, torch.float32)
    assert_one_line(info.value, "coca_ViT-B-32", "cannot be fetched", "caption_path")
    assert no_network  # it did try, and the refusal became the one-line error


def test_local_folder_errors(tmp_path: Path, tiny_dir: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelMissingError) as info:
        load(missing)
    assert_one_line(info.value, str(missing), "caption_path")

    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "open_clip_config.json").write_bytes(
        (tiny_dir / "open_clip_config.json").read_bytes())
    with pytest.raises(ModelMissingError) as info:
        load(no_weights)
    assert_one_line(info.value, str(no_weights), "no weights")

    (no_weights / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelMissingError) as info:
        load(no_weights)
    assert_one_line(info.value, str(no_weights), "could not be loaded")


def test_bad_names_are_config_errors() -> None:
    for models, needle in [
        (ModelsConfig(caption_model="coca_ViT-X-99"), "[models] caption_model"),
        (ModelsConfig(caption_pretrained="no_such_tag"), "[models] caption_pretrained"),
    ]:
        with pytest.raises(ConfigError) as info:
            Captioner.from_config(models, GenerationConfig(), CPU, torch.float32)
        assert "\n" not in str(info.value) and needle in str(info.value)
